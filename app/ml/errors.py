"""Domain errors of the engine.

    CharnnError
    ├── VocabularyError          a vocabulary itself is malformed
    ├── UnknownCharactersError   text holds characters outside the vocabulary
    ├── DataError                training data is empty, misaligned or too short
    ├── ConfigurationError       hyperparameters that cannot work together
    ├── TrainingDivergedError    the loss became NaN or infinite
    ├── DeviceUnavailableError   a device was asked for that this machine lacks
    ├── CheckpointError          a checkpoint is missing, corrupted, tampered or foreign
    └── StorageError             a checkpoint cannot be written: no space, read-only, ...

Each message says what was wrong and, where it can, how to fix it; the service
layer maps them to HTTP responses in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class CharnnError(Exception):
    """Base class of every error the engine raises on purpose."""


class VocabularyError(CharnnError):
    pass


@dataclass(frozen=True)
class UnknownCharacter:
    """One offending character: which input (0-based), where in it, and what."""

    input_index: int
    position: int
    character: str


class UnknownCharactersError(CharnnError):
    """``field`` is a template such as ``inputs[{i}]`` filled with each input's index."""

    def __init__(self, field: str, unknown: list[UnknownCharacter], allowed: list[str]) -> None:
        self.field = field
        self.unknown = unknown
        self.allowed = allowed
        shown = ", ".join(
            f"{u.character!r} at position {u.position} of {field.format(i=u.input_index)}"
            for u in unknown[:20]
        )
        more = f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else ""
        super().__init__(
            f"unknown characters: {shown}{more}; the vocabulary is {''.join(allowed)!r}"
        )


class DataError(CharnnError):
    """Bad training data; ``field`` locates it (``pairs[3].target``, ``text``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigurationError(CharnnError):
    pass


class TrainingDivergedError(CharnnError):
    """``quantity`` ("loss", "validation loss") became NaN or infinite in ``epoch``."""

    def __init__(self, quantity: str, value: float, epoch: int) -> None:
        self.quantity, self.value, self.epoch = quantity, value, epoch
        kind = "NaN" if math.isnan(value) else "infinite"
        super().__init__(
            f"{quantity} became {kind} at epoch {epoch}: the training diverged; lower "
            "hyperparameters.learning_rate (or weight_decay), or set hyperparameters.grad_clip"
        )


class DeviceUnavailableError(CharnnError):
    pass


class CheckpointError(CharnnError):
    pass


class StorageError(CharnnError):
    """The disk refused a write: full, over quota, read-only or not ours to write."""
