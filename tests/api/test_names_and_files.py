"""No request reaches outside the store, and nothing in the store is ever unpickled.

Names: every route that takes a model name, a version or a file name is sent
traversals (``../``, ``%2e%2e%2f``, double encoding, overlong UTF-8, backslashes),
absolute paths, unicode look-alikes (fullwidth solidus and full stop, Cyrillic
letters), NUL bytes, newlines and names past 64 characters. The requests go over a
raw socket to a real uvicorn, so that no client library tidies the path first, and
each answer must be a 4xx: a file named with this run's token must appear nowhere.

Files: an imported checkpoint is its JSON and its safetensors weights, nothing else;
each is size-limited, hashed and shape-checked before anything is written. A pickle
put in the store (in place of the weights, re-hashed so that sizes and hashes agree,
or beside them) is refused or ignored, never loaded: its payload would create a
marker directory, which never appears.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import safetensors.torch
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.ml.checkpoint import META_FILE, WEIGHTS_FILE, Checkpoint, save_checkpoint
from app.settings import Settings
from app.store.check import Kind, check_store
from app.store.layout import StoreLayout, new_id
from app.store.registry import Registry

Publish = Callable[[str, Checkpoint], int]
TOKEN = f"escape-{new_id()[:8]}"  # a name no file may ever get
REFUSED = {400, 404, 405, 422}

# Model names as they appear in a URL path (percent-encoded where a client would encode).
PATH_NAMES = [
    "..",
    f"../{TOKEN}",
    f"../../../{TOKEN}",
    f"%2e%2e%2f{TOKEN}",
    f"%2E%2E%2F%2E%2E%2F{TOKEN}",
    f"..%2f..%2f{TOKEN}",
    f"%252e%252e%252f{TOKEN}",  # double-encoded: decoded once, it is still not a slug
    f"%c0%ae%c0%ae%c0%af{TOKEN}",  # overlong UTF-8 for "../"
    f"..%5c..%5c{TOKEN}",  # backslashes
    f"%2ftmp%2f{TOKEN}",  # an absolute path
    f"..%ef%bc%8f{TOKEN}",  # fullwidth solidus U+FF0F
    "%ef%bc%8e%ef%bc%8e",  # fullwidth full stops U+FF0E
    "..\uff0f" + TOKEN,  # the same, raw UTF-8 on the wire
    "h%d0%b5llo",  # Cyrillic "е" U+0435: looks like "hello"
    "hello%00",
    f"hello%00{TOKEN}",
    "hello%0a",
    "hello%20",
    "Hello",
    "a" * 65,
    "a" * 5000,
    "~root",
    ".",
    "-hello",
    f"{TOKEN}.pkl",
]

# Model names as a JSON body carries them.
BODY_NAMES = [
    "..",
    f"../{TOKEN}",
    f"../../../{TOKEN}",
    f"..\\..\\{TOKEN}",
    f"%2e%2e%2f{TOKEN}",
    f"%252e%252e%252f{TOKEN}",
    f"/tmp/{TOKEN}",
    f"C:\\{TOKEN}",
    f"hello/../{TOKEN}",
    f"..\uff0f{TOKEN}",
    "\uff0e\uff0e",
    "h\u0435llo",  # Cyrillic "е"
    "\u0430bc",  # Cyrillic "а"
    "hello\u0000",
    f"hello\u0000{TOKEN}",
    "hello\n",
    "hello\u200b",  # zero-width space
    "ｈｅｌｌｏ",  # fullwidth letters
    "",
    "a" * 65,
    "a" * 100_000,
]

VERSIONS = ["..", "1%2f..", "-1", "0", "1e3", "0x1", "%2e%2e", "9" * 30, "1%00", "%00"]

FILENAMES = [
    "..",
    f"..%2f..%2f..%2f{TOKEN}",
    "..%2f..%2f..%2fregistry.db",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fregistry.db",
    "..%5c..%5cregistry.db",
    "%2fetc%2fpasswd",
    "checkpoint.json%00",
    "checkpoint.json%00.pkl",
    "weights.safetensors%2f..%2f..%2fcheckpoint.json",
    "CHECKPOINT.JSON",
    "checkpoint\uff0ejson",
    "training.safetensors",
    "model.pkl",
    "weights.pt",
]

STATIC_TRAVERSALS = [
    "/static/playground/../../../settings.py",
    "/static/playground/..%2f..%2f..%2fsettings.py",
    "/static/playground/%2e%2e/%2e%2e/%2e%2e/settings.py",
    "/static/docs/..%2f..%2f..%2f..%2fapp%2fsettings.py",
]


# --- a raw HTTP client: the path goes on the wire exactly as written ---------------------------


def raw_request(
    port: int, method: str, target: str, body: bytes = b"", content_type: str = ""
) -> tuple[int, bytes]:
    head = f"{method} ".encode() + target.encode() + b" HTTP/1.1\r\n"
    head += b"Host: 127.0.0.1\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n".encode()
    if content_type:
        head += f"Content-Type: {content_type}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


def multipart(
    meta: bytes, weights: bytes, names: tuple[str, str] | None = None
) -> tuple[bytes, str]:
    """A checkpoint import's body and content type, as a client would send them."""
    meta_name, weights_name = names or (META_FILE, WEIGHTS_FILE)
    request = httpx.Request(
        "POST",
        "http://127.0.0.1/",
        files={
            "checkpoint": (meta_name, meta, "application/json"),
            "weights": (weights_name, weights, "application/octet-stream"),
        },
    )
    return request.read(), request.headers["content-type"]


def checkpoint_files(checkpoint: Checkpoint, directory: Path) -> tuple[bytes, bytes]:
    """The two files of ``checkpoint`` as a download gives them: (JSON, weights)."""
    save_checkpoint(checkpoint, directory)
    return (directory / META_FILE).read_bytes(), (directory / WEIGHTS_FILE).read_bytes()


def names_containing(token: str, tree: Path) -> list[Path]:
    """Files and directories named with ``token``: in ``tree``, and wherever a path
    relative to the working directory, or an absolute one into /tmp, would have put them."""
    found = [Path(root, n) for root, dirs, files in os.walk(tree) for n in dirs + files]
    for directory in (Path.cwd(), Path.cwd().parent, Path("/tmp")):
        found += list(directory.iterdir())
    return [path for path in found if token in path.name]


# --- names -------------------------------------------------------------------------------------


def test_no_name_version_or_file_name_reaches_outside_the_store(
    start_server: Callable[..., Any],
    publish_model: Callable[[Path, str, Checkpoint], int],
    hello_model: Checkpoint,
    tmp_path: Path,
) -> None:
    sandbox = tmp_path / "sandbox"
    store = sandbox / "store"
    publish_model(store, "hello", hello_model)
    server = start_server(store_dir=store)
    meta, weights = checkpoint_files(hello_model, tmp_path / "export")
    import_body, import_type = multipart(meta, weights)
    answers: list[tuple[int, str, str, bytes]] = []

    def send(method: str, target: str, body: bytes = b"", content_type: str = "") -> None:
        status, content = raw_request(server.port, method, target, body, content_type)
        answers.append((status, method, target, content))

    for name in PATH_NAMES:
        for method, template in [
            ("GET", "/models/{}"),
            ("DELETE", "/models/{}"),
            ("GET", "/models/{}/versions/1"),
            ("DELETE", "/models/{}/versions/1"),
            ("GET", "/models/{}/versions/1/files/checkpoint.json"),
            ("GET", "/jobs?model_name={}"),
        ]:
            send(method, template.format(name))
        # a valid checkpoint: the name alone must stop it
        send("POST", f"/models/{name}/versions", import_body, import_type)
    for version in VERSIONS:
        for method, template in [
            ("GET", "/models/hello/versions/{}"),
            ("DELETE", "/models/hello/versions/{}"),
            ("GET", "/models/hello/versions/{}/files/weights.safetensors"),
        ]:
            send(method, template.format(version))
    for filename in FILENAMES:
        send("GET", f"/models/hello/versions/1/files/{filename}")
    for target in STATIC_TRAVERSALS:  # the other files the service serves: its assets
        send("GET", target)
    for name in BODY_NAMES:
        for path, extra in [
            ("/train", {"data": {"pairs": [{"input": "hello", "target": "ohlol"}]}}),
            ("/predict", {"inputs": ["hello"]}),
            ("/generate", {"prompt": "he"}),
        ]:
            body = json.dumps({"model_name": name, **extra}).encode()
            send("POST", path, body, "application/json")

    wrong = [(s, m, t[:120], c[:200]) for s, m, t, c in answers if s not in REFUSED]
    assert wrong == []
    json_answers = [
        json.loads(c) for s, m, t, c in answers if t in ("/train", "/predict", "/generate")
    ]
    assert {tuple(a["detail"][0]["loc"]) for a in json_answers} == {("body", "model_name")}
    # nothing was written, deleted or queued
    assert names_containing(TOKEN, tmp_path) == []
    assert sorted(p.name for p in sandbox.iterdir()) == ["store"]
    assert sorted(p.name for p in (store / "models").iterdir()) == ["hello"]
    assert list((store / "jobs").iterdir()) == []
    assert server.http.get("/jobs").json()["total"] == 0
    assert [m["name"] for m in server.http.get("/models").json()] == ["hello"]
    predicted = server.http.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert predicted.json()["outputs"] == ["ohlol"]
    # and the same routes do work with proper names
    status, _ = raw_request(server.port, "POST", "/models/copy/versions", import_body, import_type)
    assert status == 201
    assert server.http.get("/models/copy/versions/1/files/weights.safetensors").content == weights
    assert server.http.delete("/models/copy").status_code == 204


def test_client_file_names_are_never_used_as_paths(
    client: TestClient, hello_model: Checkpoint, store_dir: Path, tmp_path: Path
) -> None:
    meta, weights = checkpoint_files(hello_model, tmp_path / "export")
    body, content_type = multipart(meta, weights, (f"../../{TOKEN}.json", f"/tmp/{TOKEN}.pkl"))

    response = client.post(
        "/models/hello/versions", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 201, response.text
    (directory,) = (store_dir / "models" / "hello").iterdir()
    assert sorted(p.name for p in directory.iterdir()) == [META_FILE, WEIGHTS_FILE]
    assert names_containing(TOKEN, tmp_path) == []


# --- imports --------------------------------------------------------------------------------------


class Plant:
    """A pickle that, once unpickled, creates the directory ``marker``: proof it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def armed_pickle(marker: Path) -> bytes:
    payload = pickle.dumps({"weights": Plant(marker)})
    pickle.loads(payload)  # it is armed: unpickling does run it
    assert marker.is_dir()
    marker.rmdir()
    return payload


def armed_torch_file(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weights": Plant(marker)}, buffer)
    return buffer.getvalue()


def rehashed(meta: bytes, weights: bytes) -> bytes:
    """``meta`` naming ``weights``' size and sha256: the hashes agree, the content is foreign."""
    raw = json.loads(meta)
    raw["files"][WEIGHTS_FILE] = {
        "sha256": hashlib.sha256(weights).hexdigest(),
        "size": len(weights),
    }
    return json.dumps(raw).encode()


def wider(meta: bytes) -> bytes:
    raw = json.loads(meta)
    raw["config"]["hidden_size"] *= 2
    raw["hyperparameters"]["hidden_size"] *= 2
    return json.dumps(raw).encode()


def edited(meta: bytes, *keys_then_value: Any) -> bytes:
    raw = json.loads(meta)
    *parents, last, value = keys_then_value
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return json.dumps(raw).encode()  # "\ud800" escaped, as any JSON encoder writes it


def as_float64(weights: bytes) -> bytes:
    return safetensors.torch.save(
        {k: v.double() for k, v in safetensors.torch.load(weights).items()}
    )


def flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


BadImport = Callable[[bytes, bytes, bytes, Path], tuple[bytes, bytes]]


def pickle_as_weights(meta: bytes, weights: bytes, fox: bytes, marker: Path) -> tuple[bytes, bytes]:
    payload = armed_pickle(marker)
    return rehashed(meta, payload), payload


def torch_file_as_weights(
    meta: bytes, weights: bytes, fox: bytes, marker: Path
) -> tuple[bytes, bytes]:
    payload = armed_torch_file(marker)
    return rehashed(meta, payload), payload


BAD_IMPORTS: dict[str, tuple[BadImport, str]] = {
    # (a file of another size than the declared model's tensors is refused before it is read)
    "pickle as weights": (pickle_as_weights, "weights do not fit the declared architecture"),
    "torch.save file as weights": (
        torch_file_as_weights,
        "weights do not fit the declared architecture",
    ),
    "bytes of the right size that are not safetensors": (
        lambda m, w, fox, marker: (rehashed(m, bytes(len(w))), bytes(len(w))),
        "weights.safetensors is not a valid safetensors file",
    ),
    "pickle as checkpoint.json": (
        lambda m, w, fox, marker: (armed_pickle(marker), w),
        "checkpoint.json is not JSON",
    ),
    "weights that are not those hashed": (
        lambda m, w, fox, marker: (m, flipped(w)),
        "weights.safetensors does not match its sha256: the file is corrupted",
    ),
    "weights of another architecture": (
        lambda m, w, fox, marker: (rehashed(m, fox), fox),
        "weights do not fit the declared architecture",
    ),
    "shapes that differ from the declared ones": (
        lambda m, w, fox, marker: (wider(m), w),
        "weights do not fit the declared architecture",
    ),
    "not a charnn checkpoint": (
        lambda m, w, fox, marker: (b'{"format": "pickle"}', w),
        "not a charnn checkpoint",
    ),
    "an empty weights file": (
        lambda m, w, fox, marker: (m, b""),
        "weights.safetensors is 0 bytes",
    ),
    "a character that is not Unicode text": (
        lambda m, w, fox, marker: (edited(m, "vocab", "output", 0, "\ud800"), w),
        "checkpoint.json is not JSON: it holds text that is not valid Unicode",
    ),
    "a deeply nested checkpoint.json": (
        lambda m, w, fox, marker: (b"[" * 100_000 + b"]" * 100_000, w),
        "checkpoint.json is not JSON: it is nested too deeply",
    ),
    "a config that its hyperparameters do not give": (
        lambda m, w, fox, marker: (edited(m, "config", "hidden_size", 4096), w),
        "checkpoint.json's config does not follow from its hyperparameters and vocabularies",
    ),
    "float64 weights": (
        lambda m, w, fox, marker: (rehashed(m, as_float64(w)), as_float64(w)),
        "weights do not fit the declared architecture: ",
    ),
}


@pytest.mark.parametrize(("make", "message"), BAD_IMPORTS.values(), ids=BAD_IMPORTS.keys())
def test_a_bad_checkpoint_is_refused_before_anything_is_written(
    client: TestClient,
    hello_model: Checkpoint,
    fox_model: Checkpoint,
    store_dir: Path,
    tmp_path: Path,
    make: BadImport,
    message: str,
) -> None:
    meta, weights = checkpoint_files(hello_model, tmp_path / "hello")
    _, fox_weights = checkpoint_files(fox_model, tmp_path / "fox")
    marker = tmp_path / "the-pickle-ran"
    body, content_type = multipart(*make(meta, weights, fox_weights, marker))

    response = client.post(
        "/models/hello/versions", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "checkpoint"], "invalid_request")
    assert error["msg"].startswith(f"checkpoint: {message}")
    assert not marker.exists()
    assert client.get("/models").json() == []
    assert list((store_dir / "models").iterdir()) == []  # not even a staging directory


@pytest.mark.parametrize(
    ("field", "setting"), [("checkpoint", "max_import_meta_bytes"), ("weights", "max_import_bytes")]
)
def test_an_import_over_a_file_limit_is_refused_with_413_naming_the_setting(
    make_settings: Callable[..., Settings],
    hello_model: Checkpoint,
    store_dir: Path,
    tmp_path: Path,
    field: str,
    setting: str,
) -> None:
    meta, weights = checkpoint_files(hello_model, tmp_path / "export")
    limit = 1024  # the least either setting takes
    assert min(len(meta), len(weights)) > limit
    body, content_type = multipart(meta, weights)

    with TestClient(create_app(make_settings(**{setting: limit}))) as client:
        response = client.post(
            "/models/hello/versions", content=body, headers={"content-type": content_type}
        )
        listed = client.get("/models").json()

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"{field}: more than {limit} bytes uploaded "
        f"(limit set by CHARNN_{setting.upper()})"
    }
    assert listed == []
    assert list((store_dir / "models").iterdir()) == []


def test_an_import_is_held_to_the_limits_of_training(
    make_settings: Callable[..., Settings],
    hello_model: Checkpoint,
    store_dir: Path,
    tmp_path: Path,
) -> None:
    meta, weights = checkpoint_files(hello_model, tmp_path / "export")  # 2 layers
    body, content_type = multipart(meta, weights)

    with TestClient(create_app(make_settings(max_num_layers=1))) as client:
        response = client.post(
            "/models/hello/versions", content=body, headers={"content-type": content_type}
        )

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "checkpoint", "config", "num_layers"],
            "msg": "checkpoint.config.num_layers: 2, at most 1 allowed "
            "(limit set by CHARNN_MAX_NUM_LAYERS)",
            "type": "limit_exceeded",
        }
    ]
    assert list((store_dir / "models").iterdir()) == []


def with_part(body: bytes, content_type: str, name: str) -> bytes:
    """``body`` with one more part, ``name``, before its closing boundary."""
    boundary = content_type.partition("boundary=")[2].encode()
    closing = b"--" + boundary + b"--\r\n"
    extra = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode()
    return body.removesuffix(closing) + extra + b'"\r\n\r\nx\r\n' + closing


MALFORMED: dict[str, tuple[Callable[[bytes, str], tuple[bytes, str]], int, Any]] = {
    "JSON instead of multipart": (
        lambda body, kind: (b'{"checkpoint": "x"}', "application/json"),
        415,
        "send the files checkpoint, weights as multipart/form-data",
    ),
    "no boundary": (
        lambda body, kind: (body, "multipart/form-data"),
        400,
        "invalid multipart body: no boundary in its Content-Type",
    ),
    "a body cut short": (
        lambda body, kind: (body[: len(body) // 2], kind),
        400,
        "invalid multipart body: it ends inside a part",
    ),
    "the checkpoint twice": (
        lambda body, kind: (body.replace(b'name="weights"', b'name="checkpoint"'), kind),
        422,
        [
            {
                "type": "invalid_request",
                "loc": ["body", "checkpoint"],
                "msg": "checkpoint: sent twice",
                "input": None,
            }
        ],
    ),
    "a third part": (
        lambda body, kind: (with_part(body, kind, "script"), kind),
        422,
        [
            {
                "type": "extra_forbidden",
                "loc": ["body", "script"],
                "msg": "Extra inputs are not permitted",
                "input": None,
            }
        ],
    ),
}


@pytest.mark.parametrize(("malform", "status", "detail"), MALFORMED.values(), ids=MALFORMED.keys())
def test_an_import_that_is_not_two_files_in_multipart_is_refused(
    client: TestClient,
    hello_model: Checkpoint,
    store_dir: Path,
    tmp_path: Path,
    malform: Callable[[bytes, str], tuple[bytes, str]],
    status: int,
    detail: Any,
) -> None:
    meta, weights = checkpoint_files(hello_model, tmp_path / "export")
    body, content_type = malform(*multipart(meta, weights))

    response = client.post(
        "/models/hello/versions", content=body, headers={"content-type": content_type}
    )

    assert (response.status_code, response.json()["detail"]) == (status, detail)
    assert list((store_dir / "models").iterdir()) == []


def test_an_import_without_one_of_its_files_names_it(
    client: TestClient, hello_model: Checkpoint, store_dir: Path, tmp_path: Path
) -> None:
    meta, _ = checkpoint_files(hello_model, tmp_path / "export")

    response = client.post("/models/hello/versions", files={"checkpoint": ("c.json", meta)})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "missing", "loc": ["body", "weights"], "msg": "Field required", "input": None}
    ]
    assert list((store_dir / "models").iterdir()) == []


# --- what is in the store -----------------------------------------------------------------------


def replace_weights(directory: Path, payload: bytes) -> None:
    (directory / WEIGHTS_FILE).write_bytes(payload)
    (directory / META_FILE).write_bytes(rehashed((directory / META_FILE).read_bytes(), payload))


PLANTS: dict[str, tuple[Callable[[Path, Path], Any], str]] = {
    "pickle as weights": (
        lambda d, marker: replace_weights(d, armed_pickle(marker)),
        "weights.safetensors is not a valid safetensors file",
    ),
    "torch.save file as weights": (
        lambda d, marker: replace_weights(d, armed_torch_file(marker)),
        "weights.safetensors is not a valid safetensors file",
    ),
    "pickle as checkpoint.json": (
        lambda d, marker: (d / META_FILE).write_bytes(armed_pickle(marker)),
        "checkpoint.json is unreadable or not JSON",
    ),
}


@pytest.mark.parametrize(("plant", "message"), PLANTS.values(), ids=PLANTS.keys())
def test_a_pickle_planted_in_the_store_is_refused_never_loaded(
    client: TestClient,
    publish: Publish,
    hello_model: Checkpoint,
    store_dir: Path,
    tmp_path: Path,
    plant: Callable[[Path, Path], Any],
    message: str,
) -> None:
    publish("hello", hello_model)
    (directory,) = (store_dir / "models" / "hello").iterdir()
    marker = tmp_path / "the-pickle-ran"
    plant(directory, marker)

    response = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})

    assert response.status_code == 503
    assert response.json()["detail"].startswith(
        f"the stored checkpoint failed verification: {message}"
    )
    assert not marker.exists()


def test_files_beside_a_checkpoint_are_never_read(
    client: TestClient, publish: Publish, hello_model: Checkpoint, store_dir: Path, tmp_path: Path
) -> None:
    publish("hello", hello_model)
    (directory,) = (store_dir / "models" / "hello").iterdir()
    marker = tmp_path / "the-pickle-ran"
    payload = armed_pickle(marker)
    for name in ("model.pkl", "weights.pt", "checkpoint.pkl", "weights.safetensors.pkl"):
        (directory / name).write_bytes(payload)

    predicted = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    downloads = [
        client.get(f"/models/hello/versions/1/files/{name}").status_code
        for name in ("model.pkl", "weights.pt", "checkpoint.pkl")
    ]

    assert (predicted.status_code, predicted.json()["outputs"]) == (200, ["ohlol"])
    assert downloads == [422, 422, 422]
    assert not marker.exists()
    registry = Registry.connect(Settings(store_dir=store_dir).registry_url, migrate=False)
    try:
        report = check_store(registry, StoreLayout(store_dir), min_age=0)
    finally:
        registry.close()
    assert sorted((f.kind, f.path.name) for f in report.problems) == [
        (Kind.FOREIGN, "checkpoint.pkl"),
        (Kind.FOREIGN, "model.pkl"),
        (Kind.FOREIGN, "weights.pt"),
        (Kind.FOREIGN, "weights.safetensors.pkl"),
    ]


def test_a_file_gone_from_the_store_is_no_server_error(
    make_settings: Callable[..., Settings],
    publish: Publish,
    hello_model: Checkpoint,
    store_dir: Path,
) -> None:
    publish("hello", hello_model)
    (directory,) = (store_dir / "models" / "hello").iterdir()
    (directory / WEIGHTS_FILE).unlink()

    app = create_app(make_settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        downloaded = client.get(f"/models/hello/versions/1/files/{WEIGHTS_FILE}")
        predicted = client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})

    assert predicted.status_code == 503
    assert downloaded.status_code == 503
    assert downloaded.json()["detail"].startswith("the stored checkpoint failed verification")
