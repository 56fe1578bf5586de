"""Checkpoint imports and a store that says no, against a real uvicorn server.

What these reproduce, as a hostile client or an unlucky operator met them before:

- a 25 KB upload declaring a large LSTM made the server build it (2.2 GB) before its
  422: now its shapes are arithmetic, and the peak RSS of the refusal is measured;
- a 300 MB import was read and spooled whole before any refusal: now each file streams
  into the store within its own limit, and the bytes a client got to send before the
  413 are counted;
- imports at once without bound: now ``CHARNN_MAX_CONCURRENT_IMPORTS``, then 429
  before the body is read;
- a lone surrogate in a vocabulary, a deeply nested ``checkpoint.json``: 500s, now 422s;
- a full disk: a 500 and an empty model folder, ``/readyz`` still ready; now 507,
  nothing left behind, and ``/readyz`` 503 naming the store;
- a SQLite registry that was read-only and became writable again kept refusing writes.

The figures go to test-artifacts/imports.json.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Any

import httpx
import pytest

from app.ml.checkpoint import META_FILE, WEIGHTS_FILE, Checkpoint, save_checkpoint
from tests.conftest import ROOT, LiveServer, proc_status_mib
from tests.mounts import fill, read_only, small_disk

ARTIFACTS = ROOT / "test-artifacts"
MiB = 1024 * 1024

# the bounds
MAX_PEAK_RSS_GROWTH_MIB = 32.0  # measured: 0.6 MiB; building the declared model: 12 GB
SEND_BUFFER = 64 * 1024  # the client's socket's; the server's own takes in a little more
MAX_BYTES_SENT_PAST_THE_LIMIT = 4 * MiB  # measured: 0.5 MB, the buffers of uvicorn and the kernel
MAX_BYTES_SENT_BEFORE_429 = 1 * MiB  # measured: 9-340 KB, what the sockets and uvicorn buffer


def report(name: str, figures: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "imports.json"
    reported = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**reported, name: figures}, indent=2) + "\n")


def reset_peak_rss(pid: int) -> None:
    """From now on VmHWM is the peak since now (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture
def files(hello_model: Checkpoint, tmp_path: Path) -> tuple[bytes, bytes]:
    """The tutorial's checkpoint as a download gives it: (checkpoint.json, weights)."""
    save_checkpoint(hello_model, tmp_path / "export")
    return (tmp_path / "export" / META_FILE).read_bytes(), (
        tmp_path / "export" / WEIGHTS_FILE
    ).read_bytes()


def edited(meta: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    raw = json.loads(meta)
    edit(raw)
    return json.dumps(raw).encode()


class Upload:
    """A multipart import sent from a generator that counts the bytes it gave away."""

    def __init__(
        self,
        meta: bytes,
        weights: bytes,
        filler: int = 0,
        pause: float = 0.0,
        weights_first: bool = False,
    ):
        self.meta, self.weights, self.filler, self.pause = meta, weights, filler, pause
        self.weights_first = weights_first
        self.boundary = "charnn-abuse-boundary"
        self.sent = 0
        self.release = threading.Event()  # set: the paused upload goes on

    def part(self, name: str) -> bytes:
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()

    def chunks(self) -> Iterator[bytes]:
        """The checkpoint, then the weights (``filler`` zeros at their end); or the other
        way round."""
        if not self.weights_first:
            yield from self.counted(self.part("checkpoint") + self.meta + b"\r\n")
        yield from self.counted(self.part("weights") + self.weights)
        if self.pause:
            self.release.wait(self.pause)
        for _ in range(0, self.filler, 64 * 1024):
            yield from self.counted(bytes(64 * 1024))
        yield from self.counted(b"\r\n")
        if self.weights_first:
            yield from self.counted(self.part("checkpoint") + self.meta + b"\r\n")
        yield from self.counted(f"--{self.boundary}--\r\n".encode())

    def counted(self, data: bytes) -> Iterator[bytes]:
        self.sent += len(data)
        yield data

    def post(self, base_url: str, model: str) -> httpx.Response:
        headers = {"content-type": f"multipart/form-data; boundary={self.boundary}"}
        # a small send buffer: what was sent is close to what the server took in
        transport = httpx.HTTPTransport(socket_options=[(SOL_SOCKET, SO_SNDBUF, SEND_BUFFER)])
        with httpx.Client(base_url=base_url, timeout=60, transport=transport) as http:
            return http.post(f"/models/{model}/versions", content=self.chunks(), headers=headers)


def post_files(server: LiveServer, model: str, meta: bytes, weights: bytes) -> httpx.Response:
    return server.http.post(
        f"/models/{model}/versions",
        files={"checkpoint": (META_FILE, meta), "weights": (WEIGHTS_FILE, weights)},
    )


# --- memory: the declared network is never built ---------------------------------------------


def declare_huge(raw: dict[str, Any]) -> None:
    huge = {"cell": "lstm", "hidden_size": 4096, "num_layers": 8, "embedding_size": 1024}
    raw["config"].update(huge, bidirectional=True)
    raw["hyperparameters"].update(huge, bidirectional=True)


HUGE_LIMITS = {"max_hidden_size": 4096, "max_num_layers": 8, "max_embedding_size": 1024}
HUGE_REFUSALS = {
    # its weights (12 GB) could never be imported here: 413 before they are read
    "over the weights limit": (
        {},
        413,
        "weights: the declared model's 2986897411 parameters take 11947589644 bytes",
    ),
    # importable, but not in a 1.5 KB file: the declared sizes do not add up
    "under the weights limit": (
        {"max_import_bytes": 16 * 1024**3},
        422,
        "checkpoint: weights do not fit the declared architecture: its tensors take 11947589644",
    ),
}


@pytest.mark.parametrize(
    ("limits", "status", "message"), HUGE_REFUSALS.values(), ids=HUGE_REFUSALS.keys()
)
def test_an_import_declaring_a_huge_network_is_refused_in_little_memory(
    start_server: Callable[..., LiveServer],
    files: tuple[bytes, bytes],
    limits: dict[str, Any],
    status: int,
    message: str,
) -> None:
    # limits that admit the declared model: only arithmetic on its sizes can refuse it
    server = start_server(**HUGE_LIMITS, **limits)
    meta, weights = files
    huge = edited(meta, declare_huge)  # 3 billion parameters, 12 GB as float32
    reset_peak_rss(server.pid)
    before = proc_status_mib(server.pid, "VmRSS")

    started = time.perf_counter()
    response = post_files(server, "huge", huge, weights)
    seconds = time.perf_counter() - started

    growth = proc_status_mib(server.pid, "VmHWM") - before
    report(
        f"huge network declared, {status}",
        {
            "upload_bytes": len(huge) + len(weights),
            "peak_rss_growth_mib": round(growth, 1),
            "seconds": round(seconds, 3),
        },
    )
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert (detail if status == 413 else detail[0]["msg"]).startswith(message)
    assert growth < MAX_PEAK_RSS_GROWTH_MIB
    assert list((server.store_dir / "models").iterdir()) == []


# --- bytes: refused as the limit passes, not once the body is in ---------------------------


OVERSIZE = {
    # the weights come first: nothing says their size yet but CHARNN_MAX_IMPORT_BYTES
    "over the limit": (
        True,
        413,
        "weights: more than 1048576 bytes uploaded (limit set by CHARNN_MAX_IMPORT_BYTES)",
    ),
    # the checkpoint.json first: the weights may be as large as it says, not a byte more
    "over the declared size": (
        False,
        422,
        "checkpoint: weights.safetensors is more than the {declared} bytes checkpoint.json says",
    ),
}


@pytest.mark.parametrize(
    ("weights_first", "status", "message"), OVERSIZE.values(), ids=OVERSIZE.keys()
)
def test_an_oversize_file_is_refused_before_the_body_is_read(
    start_server: Callable[..., LiveServer],
    files: tuple[bytes, bytes],
    weights_first: bool,
    status: int,
    message: str,
) -> None:
    limit = 1 * MiB
    server = start_server(max_import_bytes=limit)
    # the weights part: 64 MiB more than the file, no Content-Length
    upload = Upload(*files, filler=64 * MiB, weights_first=weights_first)

    response = upload.post(server.base_url, "big")

    report(
        f"oversize weights, {status}",
        {
            "limit_bytes": limit,
            "declared_weights_bytes": len(files[1]),
            "body_bytes": len(files[0]) + len(files[1]) + 64 * MiB,
            "bytes_sent_before_refusal": upload.sent,
        },
    )
    assert response.status_code == status
    assert response.headers["connection"] == "close"  # the rest will never be read
    detail = response.json()["detail"]
    expected = message.format(declared=len(files[1]))
    assert (detail if status == 413 else detail[0]["msg"]) == expected
    assert upload.sent < limit + MAX_BYTES_SENT_PAST_THE_LIMIT
    assert list((server.store_dir / "models").iterdir()) == []


def test_a_client_gone_mid_upload_leaves_nothing(
    start_server: Callable[..., LiveServer], files: tuple[bytes, bytes]
) -> None:
    server = start_server()
    upload = Upload(*files)
    head = (
        "POST /models/gone/versions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n"
        f"Content-Type: multipart/form-data; boundary={upload.boundary}\r\n\r\n"
    )
    body = b"".join(upload.chunks())[:-100]  # the weights' last bytes never come
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(head.encode() + body)
        deadline = time.monotonic() + 10
        while not list(server.store_dir.glob("models/gone/.*")) and time.monotonic() < deadline:
            time.sleep(0.01)  # the upload is under way
    deadline = time.monotonic() + 10
    while (server.store_dir / "models" / "gone").exists() and time.monotonic() < deadline:
        time.sleep(0.01)

    assert list((server.store_dir / "models").iterdir()) == []
    assert "Traceback" not in server.log


def test_imports_past_the_concurrency_limit_get_429_before_their_body_is_read(
    start_server: Callable[..., LiveServer], files: tuple[bytes, bytes]
) -> None:
    server = start_server(max_concurrent_imports=1)
    slow = Upload(*files, pause=30)  # holds the one slot until released
    answers: list[httpx.Response] = []
    first = threading.Thread(target=lambda: answers.append(slow.post(server.base_url, "one")))
    first.start()
    deadline = time.monotonic() + 10
    while not list((server.store_dir / "models").glob("one/.*")) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the first import's staging directory exists

    second = Upload(*files, filler=64 * MiB)
    refused = second.post(server.base_url, "two")
    slow.release.set()
    first.join(30)

    report("concurrent imports", {"limit": 1, "bytes_sent_before_429": second.sent})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert "(limit set by CHARNN_MAX_CONCURRENT_IMPORTS)" in refused.json()["detail"]
    assert second.sent < MAX_BYTES_SENT_BEFORE_429
    assert [a.status_code for a in answers] == [201]
    assert post_files(server, "three", *files).status_code == 201  # the slot is free again
    assert sorted(p.name for p in (server.store_dir / "models").iterdir()) == ["one", "three"]


# --- contents no store can hold ----------------------------------------------------------------

UNSTORABLE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "a lone surrogate in the vocabulary": (
        lambda meta: edited(meta, lambda raw: raw["vocab"]["output"].__setitem__(0, "\ud800")),
        "checkpoint: checkpoint.json is not JSON: it holds text that is not valid Unicode",
    ),
    "a deeply nested checkpoint.json": (
        lambda meta: b'{"format": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "checkpoint: checkpoint.json is not JSON: it is nested too deeply",
    ),
}


@pytest.mark.parametrize(("make", "message"), UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_an_import_no_store_could_hold_is_a_422(
    start_server: Callable[..., LiveServer],
    files: tuple[bytes, bytes],
    make: Callable[[bytes], bytes],
    message: str,
) -> None:
    server = start_server()
    meta, weights = files

    response = post_files(server, "odd", make(meta), weights)

    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith(message)
    assert server.http.get("/readyz").status_code == 200
    assert list((server.store_dir / "models").iterdir()) == []


# --- the disk says no ---------------------------------------------------------------------------


def test_a_full_disk_answers_507_leaves_nothing_and_shows_in_readyz(
    start_server: Callable[..., LiveServer], files: tuple[bytes, bytes], tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", 16 * MiB) as disk:
        server = start_server(store_dir=disk / "store")
        filler = fill(disk)

        full = post_files(server, "hello", *files)
        ready = server.http.get("/readyz")
        models = sorted(p.name for p in (disk / "store" / "models").iterdir())
        filler.unlink()
        freed = post_files(server, "hello", *files)
        ready_again = server.http.get("/readyz")
        server.stop()  # before the disk goes

    assert full.status_code == 507
    assert full.json()["detail"].startswith(
        "cannot write an upload: the disk is full (No space left on device); "
        "free space or make the store writable, then try again"
    )
    assert models == []  # no empty model folder, no staging leftover
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == (
        f"not writable: {disk / 'store'}: No space left on device"
    )
    assert (freed.status_code, freed.json()["version"]) == (201, 1)
    assert ready_again.status_code == 200


def read_at_once(url: str, clients: int, each: int) -> list[int]:
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            statuses.extend(http.get(url).status_code for _ in range(each))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_a_read_only_sqlite_registry_recovers_without_a_restart(
    start_server: Callable[..., LiveServer], files: tuple[bytes, bytes], tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    server = start_server(database_url=f"sqlite:///{registry / 'registry.db'}")
    assert post_files(server, "hello", *files).status_code == 201

    with read_only(registry):
        # requests at once: the server opens connections while the file is read-only
        statuses = read_at_once(server.base_url + "/models/hello", clients=24, each=10)
    written = [post_files(server, "hello", *files).status_code for _ in range(6)]

    counts = {str(status): statuses.count(status) for status in sorted(set(statuses))}
    report("read-only registry", {"while_read_only": counts, "after": written})
    assert set(statuses) <= {200, 503}  # served, or "try again shortly": never a 500
    assert written == [201] * 6
    versions = server.http.get("/models/hello").json()["versions"]
    assert [v["version"] for v in versions] == list(range(1, 8))


def test_a_job_on_a_full_disk_fails_saying_so(
    start_server: Callable[..., LiveServer], hello: dict[str, Any], tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", 16 * MiB) as disk:
        server = start_server(
            store_dir=disk / "store",
            database_url=f"sqlite:///{tmp_path / 'registry.db'}",  # the registry has room
            job_max_attempts=1,
        )
        fill(disk)

        queued = server.http.post("/train", json=hello)
        job = server.wait_for_job(queued.json()["id"])
        models = sorted(p.name for p in (disk / "store" / "models").iterdir())
        server.stop()

    assert job["status"] == "failed"
    assert "StorageError: cannot write a checkpoint to " in job["error"]
    assert "the disk is full (No space left on device)" in job["error"]
    assert models == []
