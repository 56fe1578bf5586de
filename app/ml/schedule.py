"""Learning-rate schedules and the watch over the validation loss.

    lr = learning_rate_at(hp, step, planned, watch.lr_scale)   before every step
    watch.observe(hp, epoch, val_loss)                          after every epoch

``cosine`` is nanoGPT's ``get_lr``: a linear warm-up over ``warmup_steps``, then a
cosine from ``learning_rate`` down to ``min_learning_rate`` at the planned last step,
where it stays. ``plateau`` is PyTorch's ``ReduceLROnPlateau`` (mode min, absolute
threshold ``min_delta``, no cooldown), kept as plain numbers so a checkpoint holds it
as JSON. The same watch decides early stopping and which epoch's weights are the best:
one notion of "improved", a validation loss lower than the best by more than
``min_delta``.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from app.ml.hyperparameters import Hyperparameters


def planned_steps(hp: Hyperparameters, steps_per_epoch: int) -> int:
    """The steps training means to take: its epochs', or max_steps if fewer."""
    planned = hp.epochs * steps_per_epoch
    return min(planned, hp.max_steps) if hp.max_steps is not None else planned


def learning_rate_at(hp: Hyperparameters, step: int, planned: int, scale: float) -> float:
    """The rate of the optimizer step numbered ``step`` (0-based)."""
    if hp.lr_schedule == "plateau":
        return hp.learning_rate * scale
    if hp.lr_schedule == "constant":
        return hp.learning_rate
    if step < hp.warmup_steps:
        return hp.learning_rate * (step + 1) / (hp.warmup_steps + 1)
    decay_steps = max(planned - hp.warmup_steps, 1)
    progress = min((step - hp.warmup_steps) / decay_steps, 1.0)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return hp.min_learning_rate + coefficient * (hp.learning_rate - hp.min_learning_rate)


class ValidationWatch(BaseModel):
    """The best validation loss so far and what follows from it."""

    best_loss: float | None = None
    best_epoch: int | None = None
    epochs_since_improvement: int = Field(0, ge=0)
    plateau_bad_epochs: int = Field(0, ge=0)
    lr_scale: float = Field(1.0, gt=0)  # plateau: the product of its reductions

    def observe(self, hp: Hyperparameters, epoch: int, val_loss: float) -> bool:
        """Take an epoch's validation loss; True when it is the new best."""
        improved = self.best_loss is None or val_loss < self.best_loss - hp.min_delta
        if improved:
            self.best_loss, self.best_epoch = val_loss, epoch
            self.epochs_since_improvement = self.plateau_bad_epochs = 0
        else:
            self.epochs_since_improvement += 1
            self.plateau_bad_epochs += 1
        if hp.lr_schedule == "plateau" and self.plateau_bad_epochs > hp.plateau_patience:
            self.lr_scale *= hp.plateau_factor
            self.plateau_bad_epochs = 0
        return improved

    def patience_run_out(self, hp: Hyperparameters) -> bool:
        patience = hp.early_stopping_patience
        return patience is not None and self.epochs_since_improvement >= patience
