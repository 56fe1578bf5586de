"""Publishing a checkpoint as a model version: files first, verified, then the registry row.

A version becomes visible only when its row is committed, and the row is written
only after the directory it names is complete and loads back. A crash before the
commit leaves an unnamed directory behind, never a version without files; a failure
leaves nothing, not even the empty directory of a model that had no version yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.ml.checkpoint import (
    WEIGHTS_FILE,
    Checkpoint,
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from app.ml.model import estimate_parameters
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
    try:
        save_checkpoint(checkpoint, path)
        load_checkpoint(path)  # proves the files on disk are whole
        new = describe_version(path, directory, read_meta(path))
        return registry.publish_version(model_name, new, job_id=job_id, owner=owner)
    except BaseException:
        layout.discard(path)
        raise


def describe_version(path: Path, directory: str, meta: CheckpointMeta) -> NewVersion:
    return NewVersion(
        directory=directory,
        task=meta.task,
        config=meta.config.model_dump(mode="json"),
        hyperparameters=meta.hyperparameters.model_dump(mode="json"),
        vocab=meta.vocab.model_dump(mode="json"),
        metrics=meta.history[-1].model_dump(mode="json") if meta.history else None,
        epochs=meta.epoch,
        parameters=estimate_parameters(meta.config),
        size_bytes=sum(f.stat().st_size for f in path.iterdir()),
        sha256=meta.files[WEIGHTS_FILE].sha256,
        best_epoch=meta.best_epoch,
        stop_reason=meta.stop_reason,
        validation=validation_at_best(meta),
    )


def validation_at_best(meta: CheckpointMeta) -> dict[str, Any] | None:
    """The validation scores recorded when the version's weights were trained; null
    without validation data or a known best epoch (checkpoints of format 1)."""
    best = next((m for m in meta.history if m.epoch == meta.best_epoch), None)
    if best is None or best.val_loss is None:
        return None
    return {
        "loss": best.val_loss,
        "bits_per_char": best.val_bits_per_char,
        "char_accuracy": best.val_char_accuracy,
        "seq_accuracy": best.val_seq_accuracy,
    }
