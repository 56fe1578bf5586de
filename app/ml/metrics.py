"""Per-epoch metrics and step progress, as reported to callbacks, stored in checkpoints and
served by the API. Bits per character (a loss in nats over ln 2) are given for text only:
for aligned pairs they would describe no compression anyone asks about."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Why training ended: its epochs done, a budget spent, or no more improvement.
StopReason = Literal["completed", "max_steps", "max_seconds", "early_stopping"]


class EpochMetrics(BaseModel):
    """What one epoch achieved; the tutorial's "Predicted string: ohlol, Epoch [8/15]".

    Every number is finite: a diverged epoch is never recorded (the trainer stops), and
    a checkpoint whose history says otherwise is refused.

    A classifier (task classify) scores one label per sequence: its character and
    sequence accuracies are both the share of sequences given the right label, its loss
    the cross-entropy per sequence, and its sample prediction the sample's label.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    epoch: int = Field(ge=1)
    loss: float
    train_char_accuracy: float = Field(ge=0, le=1)
    train_seq_accuracy: float = Field(ge=0, le=1)
    val_loss: float | None = None
    val_char_accuracy: float | None = None
    val_seq_accuracy: float | None = None
    sample_input: str
    sample_prediction: str
    seconds: float = Field(ge=0, description="Wall-clock time of the epoch.")
    characters: int = Field(ge=0, description="Training characters seen in the epoch.")
    # recorded since training stops on budgets and schedules (null in older records)
    bits_per_char: float | None = Field(
        None, description="Training loss in bits per character (text only): loss / ln 2."
    )
    val_bits_per_char: float | None = Field(
        None, description="Validation loss in bits per character (text only)."
    )
    learning_rate: float | None = Field(
        None, ge=0, description="The learning rate at the end of the epoch."
    )
    steps: int | None = Field(
        None, ge=0, description="Optimizer steps taken by the end of the epoch, in all."
    )


class StepProgress(BaseModel):
    """Where training stands within an epoch: reported every few steps or seconds."""

    model_config = ConfigDict(allow_inf_nan=False)

    step: int = Field(ge=0, description="Optimizer steps taken, in all.")
    epoch: int = Field(ge=1, description="The epoch in progress.")
    batch: int = Field(ge=0, description="Batches of this epoch done.")
    batches: int = Field(ge=0, description="Batches in an epoch.")
    epoch_fraction: float = Field(ge=0, le=1, description="batch / batches.")
    loss: float = Field(description="Mean training loss since the previous report.")
    bits_per_char: float | None = Field(None, description="loss / ln 2 (text only).")
    learning_rate: float = Field(ge=0, description="The learning rate of the latest step.")
    chars_per_second: float = Field(
        ge=0, description="Training characters per second since the previous report."
    )
    seconds: float = Field(0.0, ge=0, description="Training time of this epoch so far.")


class TallySums(BaseModel):
    """An unfinished epoch's running sums, as a mid-epoch checkpoint keeps them."""

    loss: float  # the sum of nats over the epoch so far, a float32 stored exactly
    weight: int = Field(ge=0)
    correct_chars: int = Field(ge=0)
    chars: int = Field(ge=0)
    correct_seqs: int = Field(ge=0)
    seqs: int = Field(ge=0)
    scored_chars: int = Field(ge=0)  # characters, or a classifier's labels


def bits(nats: float | None) -> float | None:
    """A loss in nats as bits."""
    return None if nats is None else nats / math.log(2)
