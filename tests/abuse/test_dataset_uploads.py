"""Dataset uploads as editors and spreadsheets write them, and as careless clients send them.

Each case was found by attacking ``POST /datasets``: a file that a person would call fine
(a CSV saved by Excel with a byte order mark) must read as they meant it, and a file that
could never train must be refused at upload, naming its line, not later by a job.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi.testclient import TestClient

BOM = b"\xef\xbb\xbf"  # what Excel and Notepad put before a UTF-8 file


StartServer = Callable[..., Any]


def upload(client: TestClient, body: bytes, **params: str) -> Any:
    return client.post("/datasets", content=body, params=params)


def test_a_byte_order_mark_is_not_data_and_does_not_hide_the_header(client: TestClient) -> None:
    pairs = upload(client, BOM + b"input,target\r\nabc,xyz\r\n", kind="pairs")
    labels = upload(client, BOM + b"input,label\nabc,x\nabd,y\n", kind="labels")
    jsonl = upload(client, BOM + b'{"input": "abc", "label": "x"}\n', kind="labels", format="jsonl")
    text = upload(client, BOM + b"hello")

    assert (pairs.status_code, pairs.json()["examples"], pairs.json()["vocab_size"]) == (201, 1, 3)
    assert (labels.status_code, labels.json()["examples"], labels.json()["labels"]) == (201, 2, 2)
    assert (jsonl.status_code, jsonl.json()["examples"]) == (201, 1)
    assert (text.json()["characters"], text.json()["vocab_size"]) == (5, 4)  # h e l o


def test_a_label_no_classifier_can_have_is_refused_at_upload_naming_its_line(
    client: TestClient,
) -> None:
    control = upload(client, b'input,label\nabc,x\nabd,"two\nlines"\n', kind="labels")
    long = upload(client, b"abc," + b"L" * 65 + b"\n", kind="labels")

    assert control.status_code == long.status_code == 422
    assert control.json()["detail"][0]["loc"] == ["body", "line 4"]  # csv counts the line ending it
    assert "control characters" in control.json()["detail"][0]["msg"]
    assert long.json()["detail"][0]["loc"] == ["body", "line 1"]
    assert "has 65 characters; a label has 1 to 64" in long.json()["detail"][0]["msg"]
    assert client.get("/datasets").json()["total"] == 0


def stalled_upload(
    port: int, path: str, head: bytes = b"", body: bytes = b"hello"
) -> socket.socket:
    """A client that sends its headers and the start of a large body, then nothing."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n".encode()
        + head
        + b"\r\n"
        + body
    )
    return conn


def test_an_upload_that_stops_sending_is_answered_408_and_frees_its_slot(
    start_server: StartServer,
) -> None:
    server = start_server(upload_idle_seconds=1, max_concurrent_dataset_uploads=1)
    multipart = b"Content-Type: multipart/form-data; boundary=b\r\n"
    part = b'--b\r\nContent-Disposition: form-data; name="weights"\r\n\r\nhello'
    with (
        stalled_upload(server.port, "/datasets") as stalled,
        stalled_upload(server.port, "/models/m/versions", multipart, part) as stalled_import,
    ):
        time.sleep(0.3)
        # while it waits, it holds the only upload slot
        assert httpx.post(f"{server.base_url}/datasets", content=b"hello").status_code == 429
        time.sleep(1.5)
        answers = [conn.recv(4096).decode() for conn in (stalled, stalled_import)]

    for answer in answers:
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "no byte of the body arrived for 1 seconds" in answer
        assert "CHARNN_UPLOAD_IDLE_SECONDS" in answer
    assert httpx.post(f"{server.base_url}/datasets", content=b"hello").status_code == 201
    dataset = httpx.get(f"{server.base_url}/datasets").json()["items"][0]["id"]
    assert [p.name for p in (server.store_dir / "datasets").iterdir()] == [dataset]
    assert not (server.store_dir / "models" / "m").exists()  # nothing staged is left


def test_a_compressed_body_is_refused_saying_to_send_it_uncompressed(client: TestClient) -> None:
    body = gzip.compress(b"hello world\n")

    response = client.post("/datasets", content=body, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 415
    assert response.json()["detail"] == (
        "the body is sent with Content-Encoding gzip, which is not read: send the file uncompressed"
    )
    assert client.get("/datasets").json()["total"] == 0
