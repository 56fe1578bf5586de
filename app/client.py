"""A small HTTP client for charnn, used by the ``charnn`` CLI (and usable from Python).

client = Client("http://127.0.0.1:8000")
job = client.train({"model_name": "hello", "data": {"pairs": [...]}})
for event, data in client.follow(job["id"]):  # ("job", job), ("epoch", metrics) ... ("end", job)
    print(event, data.get("epoch"))
client.predict("hello", ["hello"])["outputs"]
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled")
RECONNECTS = 5  # streams in a row that may end or fail without bringing a new epoch
RECONNECT_PAUSE = (0.5, 1, 2, 4, 8)  # seconds before each of them: a restart takes a few
Event = tuple[str, dict[str, Any]]
UPLOAD_CHUNK_BYTES = 1024 * 1024
UPLOAD_READ_SECONDS = 600.0  # the server reads a large dataset through before it answers


class ClientError(Exception):
    """The server refused the request (4xx): ``detail`` is its own wording."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(describe(detail))


class ServerUnavailable(Exception):
    """No answer, or a 5xx: the server is down, overloaded or failing."""


def describe(detail: Any) -> str:
    """One readable line per problem: ``data.pairs.0: input has 5 characters ...``."""
    if isinstance(detail, list):
        lines = []
        for error in detail:
            loc = [str(p) for p in error.get("loc", []) if p != "body"]
            lines.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', error)}")
        return "\n".join(lines)
    return str(detail)


def refuse(response: httpx.Response) -> None:
    """Raise what an error status means; the body must have been read."""
    if response.status_code >= 500:
        raise ServerUnavailable(f"{response.status_code}: {response.text[:500]}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ClientError(response.status_code, detail)


class Client:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach {self.http.base_url}: {exc}") from exc
        refuse(response)
        return response.json() if response.content else None

    # --- training and jobs ----------------------------------------------------------------

    def train(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/train", json=spec)  # type: ignore[no-any-return]

    def job(self, job_id: str, history: bool = False) -> dict[str, Any]:
        params = {"history": "true"} if history else {}
        return self.request("GET", f"/jobs/{job_id}", params=params)  # type: ignore[no-any-return]

    def jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self.request("GET", "/jobs", params=params)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def follow(self, job_id: str) -> Iterator[Event]:
        """The job's server-sent events until it ends: ``("job", job)`` first and at each
        change of status, ``("epoch", metrics)`` for each epoch once, ``("progress",
        step_progress)`` within long epochs, ``("end", job)``.

        A stream that ends or breaks before the job does (the server dropped a reader
        that fell behind, restarted, or the network failed) is resumed after the last
        epoch received, as ``Last-Event-ID``; only streams in a row that bring nothing
        new count towards giving up.
        """
        last, early = 0, 0
        while True:
            before = last
            try:
                for event, data in self._stream(job_id, last):
                    if event == "epoch":
                        last = data["epoch"]
                    yield event, data
                    if event == "end":
                        return
                problem = "keeps ending early"
            except ServerUnavailable as exc:
                problem = f"is lost: {exc}"
            early = early + 1 if last == before else 0
            if early > RECONNECTS:
                raise ServerUnavailable(f"the event stream of job {job_id} {problem}")
            time.sleep(RECONNECT_PAUSE[max(early - 1, 0)])

    def _stream(self, job_id: str, after: int) -> Iterator[Event]:
        headers = {"Last-Event-ID": str(after)} if after else {}
        path = f"/jobs/{job_id}/events"
        try:
            with self.http.stream("GET", path, headers=headers, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    refuse(response)
                event = "message"
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        yield event, json.loads(line.removeprefix("data: "))
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"lost the event stream: {exc}") from exc

    # --- models and predictions -------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return self.request("GET", "/models")  # type: ignore[no-any-return]

    def model(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/models/{name}")  # type: ignore[no-any-return]

    def version(self, name: str, version: int) -> dict[str, Any]:
        return self.request("GET", f"/models/{name}/versions/{version}")  # type: ignore[no-any-return]

    def delete(self, name: str, version: int | None = None) -> None:
        path = f"/models/{name}" if version is None else f"/models/{name}/versions/{version}"
        self.request("DELETE", path)

    def download(self, name: str, version: int, filename: str, to: Path) -> None:
        """Write one checkpoint file to ``to``, streamed (weights may be hundreds of MB)."""
        path = f"/models/{name}/versions/{version}/files/{filename}"
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    refuse(response)
                with to.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot download {path}: {exc}") from exc

    def import_version(self, name: str, checkpoint: Path, weights: Path) -> dict[str, Any]:
        with checkpoint.open("rb") as meta, weights.open("rb") as tensors:
            files = {"checkpoint": meta, "weights": tensors}
            return self.request("POST", f"/models/{name}/versions", files=files)  # type: ignore[no-any-return]

    def evaluate(self, name: str, version: int, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/models/{name}/versions/{version}/evaluate"
        return self.request("POST", path, json=body)  # type: ignore[no-any-return]

    # --- datasets ---------------------------------------------------------------------------

    def upload_dataset(self, path: Path, **params: str | None) -> dict[str, Any]:
        """Stream ``path`` as the body (never read whole); ``params``: kind, format, name."""
        given = {k: v for k, v in params.items() if v is not None}
        size = str(path.stat().st_size)  # declared, so that an oversized file is refused at once
        with path.open("rb") as handle:
            chunks = iter(lambda: handle.read(UPLOAD_CHUNK_BYTES), b"")
            return self.request(  # type: ignore[no-any-return]
                "POST",
                "/datasets",
                content=chunks,
                params=given,
                headers={"Content-Length": size, "Content-Type": "application/octet-stream"},
                timeout=httpx.Timeout(self.http.timeout.connect, read=UPLOAD_READ_SECONDS),
            )

    def datasets(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        params = {"limit": limit, "offset": offset}
        return self.request("GET", "/datasets", params=params)  # type: ignore[no-any-return]

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self.request("GET", f"/datasets/{dataset_id}")  # type: ignore[no-any-return]

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/datasets/{dataset_id}")

    def predict(self, model_name: str, inputs: list[str], **options: Any) -> dict[str, Any]:
        body = {"model_name": model_name, "inputs": inputs, **options}
        body = {k: v for k, v in body.items() if v is not None}
        return self.request("POST", "/predict", json=body)  # type: ignore[no-any-return]

    def generate(self, model_name: str, prompt: str, **options: Any) -> dict[str, Any]:
        body = {"model_name": model_name, "prompt": prompt, **options}
        body = {k: v for k, v in body.items() if v is not None}
        return self.request("POST", "/generate", json=body)  # type: ignore[no-any-return]
