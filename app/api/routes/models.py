"""Models and their versions: list, read, delete."""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Path, status

from app.api.deps import ServicesDep
from app.jobs.spec import ModelName
from app.schemas import (
    ModelPublic,
    ModelSummary,
    VersionPublic,
    model_public,
    model_summary,
    version_public,
)

router = APIRouter(prefix="/models", tags=["models"])

NamePath = Annotated[ModelName, Path(description="The model's name.")]
VersionPath = Annotated[int, Path(ge=1, description="Version number, from 1.")]


@router.get("", response_model=list[ModelSummary])
def list_models(services: ServicesDep) -> list[ModelSummary]:
    """Every model with its latest version."""
    return [model_summary(m) for m in services.registry.list_models()]


@router.get("/{name}", response_model=ModelPublic)
def get_model(name: NamePath, services: ServicesDep) -> ModelPublic:
    """A model with all its versions: vocabularies, hyperparameters, metrics, sizes, dates."""
    return model_public(services.registry.get_model(name))


@router.get("/{name}/versions/{version}", response_model=VersionPublic)
def get_version(name: NamePath, version: VersionPath, services: ServicesDep) -> VersionPublic:
    """One version of a model."""
    return version_public(name, services.registry.get_version(name, version))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(name: NamePath, services: ServicesDep) -> None:
    """Delete a model and every version (409 while a job trains it)."""
    services.registry.delete_model(name)
    services.cache.evict_model(name)
    shutil.rmtree(services.layout.model_dir(name), ignore_errors=True)


@router.delete("/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT)
def delete_version(name: NamePath, version: VersionPath, services: ServicesDep) -> None:
    """Delete one version (409 while a job trains the model)."""
    directory = services.registry.delete_version(name, version)
    services.cache.evict_model(name)
    shutil.rmtree(services.layout.version_dir(name, directory), ignore_errors=True)
