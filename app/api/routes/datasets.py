"""Datasets: upload a corpus once (streamed to the store), train on it by id."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.api.auth import AdminAccess, ReadAccess
from app.api.body_stream import body_chunks
from app.api.deps import ServicesDep
from app.api.errors import AUTH_RESPONSES, error_responses
from app.schemas import DatasetList, DatasetPublic
from app.store.corpus import DatasetFormat, DatasetKind
from app.store.datasets import DATASET_ID_PATTERN, DatasetUpload, remove_dataset_files

router = APIRouter(
    prefix="/datasets",
    tags=["datasets"],
    responses={**AUTH_RESPONSES, **error_responses(503)},
)
FLUSH_BYTES = 1024 * 1024  # bytes gathered before a thread writes them
DEFAULT_FORMAT: dict[str, DatasetFormat] = {"text": "text", "pairs": "csv", "labels": "csv"}

DatasetPath = Annotated[
    str, Path(pattern=DATASET_ID_PATTERN, description="The dataset's id (32 hex digits).")
]
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file itself, as the body (not multipart); UTF-8.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def upload_format(kind: DatasetKind, fmt: DatasetFormat | None) -> DatasetFormat:
    """The file's format: given, or the kind's usual one; text only as plain text."""
    fmt = fmt or DEFAULT_FORMAT[kind]
    if (kind == "text") != (fmt == "text"):
        wanted = "text" if kind == "text" else "csv, tsv or jsonl"
        message = f"a {kind} dataset is read as {wanted}, not {fmt}"
        raise RequestValidationError(
            [{"type": "invalid_request", "loc": ("query", "format"), "msg": message, "input": fmt}]
        )
    return fmt


@router.post(
    "",
    response_model=DatasetPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminAccess],
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {
            "description": "The same file was uploaded before: that dataset",
            "model": DatasetPublic,
        },
        201: {
            "description": "A new dataset",
            "headers": {
                "Location": {"description": "/datasets/{id}", "schema": {"type": "string"}}
            },
        },
        **error_responses(400, 408, 413, 415, 429, 507),
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    services: ServicesDep,
    kind: Annotated[
        DatasetKind,
        Query(description="text: plain text; pairs: input,target; labels: input,label."),
    ] = "text",
    format: Annotated[  # noqa: A002 (the query parameter's public name)
        DatasetFormat | None,
        Query(description="text, csv, tsv or jsonl; default: text for text, csv otherwise."),
    ] = None,
    name: Annotated[
        str | None, Query(min_length=1, max_length=64, description="A name to know it by.")
    ] = None,
) -> DatasetPublic:
    """Upload a dataset file as the body; the same file twice is the same dataset (200)."""
    fmt = upload_format(kind, format)
    refuse_multipart(request)
    refuse_compressed(request)
    with services.dataset_uploads.slot():  # 429 before a byte of the body is read
        stored = await run_in_threadpool(services.registry.dataset_bytes)
        upload = await run_in_threadpool(DatasetUpload, services.settings, kind, fmt, name, stored)
        try:
            await receive_body(request, upload)
            row, created = await run_in_threadpool(upload.publish, services.registry)
        finally:
            with anyio.CancelScope(shield=True):  # a client gone away leaves no files either
                await run_in_threadpool(upload.discard)
    if created:
        response.headers["Location"] = f"/datasets/{row.id}"
    else:
        response.status_code = status.HTTP_200_OK
    return DatasetPublic.model_validate(row)


def refuse_multipart(request: Request) -> None:
    """A form upload (curl -F) would store its boundaries and headers as the data."""
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the file itself as the body (curl -T FILE or --data-binary @FILE), "
            "not as multipart/form-data",
        )


def refuse_compressed(request: Request) -> None:
    """A gzip body would be stored, and refused as not UTF-8 at its first byte, or worse,
    taken for text; nothing here decompresses (a small body could grow without bound)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"the body is sent with Content-Encoding {encoding}, which is not read: send "
            "the file uncompressed",
        )


async def receive_body(request: Request, upload: DatasetUpload) -> None:
    """Stream the body into ``upload``, a megabyte at a time written by a thread."""
    pending: list[bytes] = []
    size = 0
    try:
        async for chunk in body_chunks(request, upload.settings.upload_idle_seconds):
            upload.reserve(len(chunk))  # 413 as soon as a limit is passed
            pending.append(chunk)
            size += len(chunk)
            if size >= FLUSH_BYTES:
                await run_in_threadpool(upload.write, b"".join(pending))
                pending, size = [], 0
    except ClientDisconnect as exc:  # nobody to answer; what was written goes
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the client went away") from exc
    if pending:
        await run_in_threadpool(upload.write, b"".join(pending))


@router.get("", response_model=DatasetList, dependencies=[ReadAccess])
def list_datasets(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Datasets a page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Datasets skipped.")] = 0,
) -> DatasetList:
    """Datasets, newest first."""
    rows, total = services.registry.list_datasets(limit=limit, offset=offset)
    items = [DatasetPublic.model_validate(row) for row in rows]
    return DatasetList(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{dataset_id}",
    response_model=DatasetPublic,
    dependencies=[ReadAccess],
    responses=error_responses(404),
)
def get_dataset(dataset_id: DatasetPath, services: ServicesDep) -> DatasetPublic:
    """One dataset: its kind, size, sha256, characters and vocabulary size."""
    return DatasetPublic.model_validate(services.registry.get_dataset(dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminAccess],
    responses=error_responses(404, 409),
)
def delete_dataset(dataset_id: DatasetPath, services: ServicesDep) -> None:
    """Delete a dataset; 409 while a queued or running job trains on it."""
    services.registry.delete_dataset(dataset_id)
    remove_dataset_files(services.settings.store_dir, dataset_id, services.registry)
