"""Dataset uploads as editors and spreadsheets write them, and as careless clients send them.

Each case was found by attacking ``POST /datasets``: a file that a person would call fine
(a CSV saved by Excel with a byte order mark) must read as they meant it, and a file that
could never train must be refused at upload, naming its line, not later by a job.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

BOM = b"\xef\xbb\xbf"  # what Excel and Notepad put before a UTF-8 file


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
