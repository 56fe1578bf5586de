"""Models and their versions: list, read, delete, download, import, evaluate."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminAccess, Caller, ReadAccess
from app.api.bodies import JsonBody, documented
from app.api.deps import ServicesDep
from app.api.errors import AUTH_RESPONSES, error_responses
from app.api.uploads import multipart_body, receive_parts
from app.jobs.spec import ModelName
from app.ml.checkpoint import META_FILE, WEIGHTS_FILE
from app.ml.errors import CheckpointError
from app.schemas import (
    VERSION_MAX,
    EvaluationPublic,
    ModelPublic,
    ModelSummary,
    VersionPublic,
    evaluation_public,
    model_public,
    model_summary,
    version_public,
)
from app.serving.evaluation import EvaluateRequest
from app.store.imports import ImportUpload

router = APIRouter(
    prefix="/models",
    tags=["models"],
    dependencies=[ReadAccess],
    responses={**AUTH_RESPONSES, **error_responses(503)},
)
NOT_FOUND = error_responses(404)
BUSY = error_responses(404, 409)

NamePath = Annotated[ModelName, Path(description="The model's name.")]
VersionPath = Annotated[int, Path(ge=1, le=VERSION_MAX, description="Version number, from 1.")]
CheckpointFile = Literal["checkpoint.json", "weights.safetensors"]
DOWNLOAD_CHUNK_BYTES = 64 * 1024


@router.get("", response_model=list[ModelSummary])
def list_models(services: ServicesDep) -> list[ModelSummary]:
    """Every model with its latest version."""
    return [model_summary(m) for m in services.registry.list_models()]


@router.get("/{name}", response_model=ModelPublic, responses=NOT_FOUND)
def get_model(name: NamePath, services: ServicesDep) -> ModelPublic:
    """A model with all its versions: vocabularies, hyperparameters, metrics, sizes, dates."""
    return model_public(services.registry.get_model(name))


@router.get("/{name}/versions/{version}", response_model=VersionPublic, responses=NOT_FOUND)
def get_version(name: NamePath, version: VersionPath, services: ServicesDep) -> VersionPublic:
    """One version of a model."""
    return version_public(name, services.registry.get_version(name, version))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminAccess],
    responses=BUSY,
)
def delete_model(name: NamePath, services: ServicesDep) -> None:
    """Delete a model and every version (409 while a job trains it)."""
    directories = services.registry.delete_model(name)
    services.serving.forget(name)
    # only the versions the rows named: one being imported right now must survive
    services.layout.remove_model_files(name, directories)


@router.delete(
    "/{name}/versions/{version}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminAccess],
    responses=BUSY,
)
def delete_version(name: NamePath, version: VersionPath, services: ServicesDep) -> None:
    """Delete one version (409 while a job trains the model)."""
    directory = services.registry.delete_version(name, version)
    services.serving.forget(name)
    shutil.rmtree(services.layout.version_dir(name, directory), ignore_errors=True)


@router.get(
    "/{name}/versions/{version}/files/{filename}",
    response_class=FileResponse,
    responses={
        200: {
            "description": f"{WEIGHTS_FILE} as application/octet-stream, {META_FILE} as JSON",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        **NOT_FOUND,
    },
)
def download_file(
    name: NamePath, version: VersionPath, filename: CheckpointFile, services: ServicesDep
) -> StreamingResponse:
    """Download one file of a version's checkpoint (its JSON or its safetensors weights)."""
    row = services.registry.get_version(name, version)
    path = services.layout.version_dir(name, row.directory) / filename
    try:
        # answered from this open file: a delete from now on cannot take it from the answer
        file = path.open("rb")
    except OSError:
        services.registry.get_version(name, version)  # deleted since its row was read: 404
        raise CheckpointError(
            f"{filename} of {name} version {version} is missing from the store"
        ) from None
    size = os.fstat(file.fileno()).st_size
    media = "application/json" if filename == META_FILE else "application/octet-stream"
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name}-v{version}-{filename}"',
    }
    return StreamingResponse(_chunks(file), media_type=media, headers=headers)


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(DOWNLOAD_CHUNK_BYTES):
            yield chunk


IMPORT_FILES = {
    "checkpoint": f"The version's {META_FILE}.",
    "weights": f"The version's {WEIGHTS_FILE}.",
}


@router.post(
    "/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionPublic,
    dependencies=[AdminAccess],
    responses=error_responses(400, 408, 415, 429, 507),
    openapi_extra=multipart_body("VersionImport", IMPORT_FILES),
)
async def import_version(name: NamePath, request: Request, services: ServicesDep) -> VersionPublic:
    """Import a checkpoint (downloaded from a charnn) as the next version of a model."""
    with services.imports.slot():  # 429 before a byte of the body is read
        upload = await run_in_threadpool(ImportUpload, services.layout, name, services.settings)
        try:
            await receive_parts(request, upload.files, services.settings.upload_idle_seconds)
            row = await run_in_threadpool(upload.publish, services.registry)
        finally:
            with anyio.CancelScope(shield=True):  # a client gone away leaves no files either
                await run_in_threadpool(upload.discard)
    return version_public(name, row)


@router.post(
    "/{name}/versions/{version}/evaluate",
    response_model=EvaluationPublic,
    openapi_extra=documented(EvaluateRequest),
    responses=error_responses(400, 404, 409, 429),
)
async def evaluate_version(
    name: NamePath,
    version: VersionPath,
    request: Annotated[EvaluateRequest, Depends(JsonBody(EvaluateRequest))],
    services: ServicesDep,
    caller: Caller,
) -> EvaluationPublic:
    """Score a version on data, or on its held-out split: NLL, bits per character, accuracy.

    Needs the predict scope, as predict does: it reads the version and answers numbers only
    (never the data), and costs what predicting the same characters costs.
    """
    services.limiter.check(caller)
    # the slot is taken on the event loop (429 at once when busy) and held until the thread
    # is done, shielded: a client gone away cannot stop the scoring, nor free its slot early
    with services.evaluations.slot(), anyio.CancelScope(shield=True):
        evaluation = await run_in_threadpool(services.evaluator.evaluate, name, version, request)
    return evaluation_public(evaluation)
