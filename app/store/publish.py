"""Publishing a checkpoint as a model version: files first, verified, then the registry row.

A version becomes visible only when its row is committed, and the row is written
only after the directory it names is complete and loads back. A crash before the
commit leaves an unnamed directory behind, never a version without files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from app.ml.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint, read_meta, save_checkpoint
from app.store.layout import StoreLayout, new_id
from app.store.registry import NewVersion, Registry
from app.store.tables import VersionRow


def publish_checkpoint(
    registry: Registry,
    layout: StoreLayout,
    model_name: str,
    checkpoint: Checkpoint,
    *,
    job_id: str | None = None,
    owner: str = "",
) -> VersionRow:
    directory = new_id()
    path = layout.version_dir(model_name, directory)
    save_checkpoint(checkpoint, path)
    try:
        published = load_checkpoint(path)  # proves the files on disk are whole
        return registry.publish_version(
            model_name, describe_version(path, directory, published), job_id=job_id, owner=owner
        )
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def describe_version(path: Path, directory: str, checkpoint: Checkpoint) -> NewVersion:
    return NewVersion(
        directory=directory,
        task=checkpoint.task,
        config=checkpoint.config.model_dump(mode="json"),
        hyperparameters=checkpoint.hyperparameters.model_dump(mode="json"),
        vocab=checkpoint.vocab.model_dump(mode="json"),
        metrics=checkpoint.history[-1].model_dump(mode="json") if checkpoint.history else None,
        epochs=checkpoint.epoch,
        parameters=sum(t.numel() for t in checkpoint.weights.values()),
        size_bytes=sum(f.stat().st_size for f in path.iterdir()),
        sha256=read_meta(path).files[WEIGHTS_FILE].sha256,
    )
