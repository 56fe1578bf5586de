"""Importing a checkpoint uploaded by a client: verified in memory, then published.

Only the two plain files of a checkpoint are accepted (its JSON and its weights in
safetensors), never an archive to extract, a path or a URL; nothing is unpickled
or executed. The JSON is validated, the weights' sha256 and size must match it,
and every tensor's shape must fit the declared architecture.
"""

from __future__ import annotations

from app.errors import InvalidRequestError
from app.ml.checkpoint import checkpoint_from_bytes
from app.ml.errors import CheckpointError
from app.store.layout import StoreLayout
from app.store.publish import publish_checkpoint
from app.store.registry import Registry
from app.store.tables import VersionRow


def import_checkpoint(
    registry: Registry, layout: StoreLayout, model_name: str, meta_json: bytes, weights: bytes
) -> VersionRow:
    try:
        checkpoint = checkpoint_from_bytes(meta_json, weights)
    except CheckpointError as exc:
        raise InvalidRequestError("checkpoint", str(exc)) from exc
    return publish_checkpoint(registry, layout, model_name, checkpoint)
