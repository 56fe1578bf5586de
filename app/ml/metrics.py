"""Per-epoch metrics, as reported to callbacks, stored in checkpoints and served by the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
