"""Scoring a trained model on examples: how good is it on text it has (or has not) seen?

    score = evaluate(model, "text", "embedding_rnn", examples, batch_size=64)
    score.nll, score.bits_per_character, score.char_accuracy

Examples are scored in batches under ``torch.inference_mode``, each row from a fresh
recurrent state, exactly as training validates them (``app.ml.train.evaluate``): a
text version's windows are the ``seq_len`` windows that ``app.ml.data.text_dataset``
builds, so the held-out split scored here gives the ``val_loss`` its training recorded.

Log-probabilities are summed in float64: float32 sums lose digits after some millions
of characters, and the mean of a long corpus must be the same number offline.

Each task has its own scorer (``SCORERS``), which adds one batch into the ``Totals``.
Sequence classification's targets are not per position (targets (N,), one label per
row, logits (N, V_labels)): its scorer counts each sequence as one target, so its
``nll`` and ``char_accuracy`` are per sequence (per label).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from app.ml.data import IGNORE_INDEX, Batch, ExampleSet, batches

LossPer = Literal["characters", "sequences"]


@dataclass
class Totals:
    """Running sums over every scored batch (plain Python numbers, float64 for the NLL)."""

    nll: float = 0.0  # sum of -log p(target), nats, over every scored target
    targets: int = 0  # scored targets: characters (pairs, text) or sequences (classify)
    correct_targets: int = 0
    sequences: int = 0
    correct_sequences: int = 0


@dataclass(frozen=True)
class Score:
    """What a model achieved on some examples; every mean says what it averages over."""

    task: str
    loss_per: LossPer  # what the version's training loss averages over
    totals: Totals

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood in nats per scored target (character, for text)."""
        return self.totals.nll / max(self.totals.targets, 1)

    @property
    def bits_per_character(self) -> float:
        return self.nll / math.log(2)

    @property
    def nll_per_sequence(self) -> float:
        """Summed NLL of a sequence, averaged over sequences (rnn_cell's training loss)."""
        return self.totals.nll / max(self.totals.sequences, 1)

    @property
    def loss(self) -> float:
        """The training objective on these examples: comparable with its ``val_loss``."""
        return self.nll_per_sequence if self.loss_per == "sequences" else self.nll

    @property
    def char_accuracy(self) -> float:
        return self.totals.correct_targets / max(self.totals.targets, 1)

    @property
    def seq_accuracy(self) -> float:
        return self.totals.correct_sequences / max(self.totals.sequences, 1)


Scorer = Callable[[nn.Module, Batch, Totals], None]


def score_positions(model: nn.Module, batch: Batch, totals: Totals) -> None:
    """Aligned pairs and text: one target per position, padding (IGNORE_INDEX) left out."""
    logits, _ = model(batch.inputs, batch.lengths)  # (B, T, V), each row from a fresh state
    mask = batch.targets != IGNORE_INDEX  # (B, T)
    nll = nn.functional.cross_entropy(
        logits.transpose(1, 2), batch.targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, T), 0 where ignored
    hits = (logits.argmax(-1) == batch.targets) & mask  # (B, T)
    totals.nll += float(nll.double().sum())
    totals.targets += int(mask.sum())
    totals.correct_targets += int(hits.sum())
    totals.sequences += batch.inputs.size(0)
    totals.correct_sequences += int((hits | ~mask).all(dim=1).sum())


def score_labels(model: nn.Module, batch: Batch, totals: Totals) -> None:
    """Sequence classification: one label per row, targets (B,), logits (B, V_labels)."""
    logits, _ = model(batch.inputs, batch.lengths)  # (B, V_labels)
    nll = nn.functional.cross_entropy(logits, batch.targets, reduction="none")  # (B,)
    hits = int((logits.argmax(-1) == batch.targets).sum())
    totals.nll += float(nll.double().sum())
    totals.targets += batch.inputs.size(0)
    totals.correct_targets += hits
    totals.sequences += batch.inputs.size(0)
    totals.correct_sequences += hits


SCORERS: dict[str, Scorer] = {
    "pairs": score_positions,
    "text": score_positions,
    "classify": score_labels,
}


# Positions (rows x padded width) one batch holds: large batches score several times faster
# than predict's small ones, and logits of 16,384 positions over the largest vocabulary
# (1,024 characters) still take 64 MB.
POSITIONS_PER_BATCH = 16_384


def rows_per_batch(examples: ExampleSet, positions: int = POSITIONS_PER_BATCH) -> int:
    """As many rows as fit ``positions``, each padded to the longest of ``examples``."""
    return max(1, positions // max(1, examples.width))


def loss_per(task: str, architecture: str) -> LossPer:
    """The tutorial's rnn_cell sums its loss over a sequence's steps (``sequence_loss``);
    a classifier has one target per sequence."""
    return "sequences" if task == "classify" or architecture == "rnn_cell" else "characters"


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    task: str,
    architecture: str,
    examples: ExampleSet,
    *,
    batch_size: int,
    device: torch.device | None = None,
) -> Score:
    """Score ``examples`` in order, ``batch_size`` rows at a time, on the model's device."""
    scorer = SCORERS.get(task)
    if scorer is None:
        raise ValueError(f"no scorer for task {task!r}; known: {', '.join(SCORERS)}")
    device = device or next(model.parameters()).device
    model.eval()
    totals = Totals()
    order = torch.arange(len(examples))
    for batch in batches(examples, order, batch_size):
        scorer(model, batch.to(device), totals)
    return Score(task, loss_per(task, architecture), totals)
