"""Training data: aligned pairs, plain text or labeled sequences, encoded once, batched
with padding.

Pairs map each input character to the target character at the same position
("hello" -> "ohlol"). Plain text becomes next-character windows: the input is
``text[i : i + seq_len]`` and the target the same window shifted by one. Labeled
sequences ("Nakamura" -> "Japanese") hold one target per row, the label's id: their
targets are (N,) rather than (N, T_max).

Rows of a batch are right-padded; padded targets hold ``IGNORE_INDEX`` so they
never count towards loss or accuracy, and ``lengths`` lets the models pack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from app.ml.errors import DataError
from app.ml.vocab import Vocab, label_problem

IGNORE_INDEX = -100  # CrossEntropyLoss's default ignore_index
Task = Literal["pairs", "text", "classify"]


@dataclass(frozen=True)
class Examples:
    """Encoded examples as padded tensors: inputs (N, T_max), lengths (N,), and targets
    (N, T_max) per character or, for classification, (N,) label ids."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor
    texts: list[str]  # the raw inputs, for sample predictions

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def characters(self) -> int:
        return int(self.lengths.sum())

    def subset(self, index: torch.Tensor) -> Examples:
        return Examples(
            self.inputs[index],
            self.targets[index],
            self.lengths[index],
            [self.texts[i] for i in index.tolist()],
        )


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # (B, T) long
    targets: torch.Tensor  # (B, T) long, IGNORE_INDEX past each row's length; (B,) labels
    lengths: torch.Tensor  # (B,) long, on the CPU (packing wants it there)

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.lengths,
        )


@dataclass(frozen=True)
class Dataset:
    task: Task
    vocab: Vocab
    examples: Examples


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """List of id lists -> (N, T_max) long tensor, right-padded with ``value``."""
    width = max((len(r) for r in rows), default=0)
    # one tensor from padded lists: filling a tensor row by row costs ten times more,
    # which the predict path pays on every batch
    padded = [[*row, *[value] * (width - len(row))] for row in rows]
    return torch.tensor(padded, dtype=torch.long).reshape(len(rows), width)


def encode_examples(vocab: Vocab, inputs: list[str], targets: list[str], field: str) -> Examples:
    input_ids = vocab.encode_inputs(inputs, field=f"{field}.input")
    target_ids = vocab.encode_targets(targets, field=f"{field}.target")
    return Examples(
        inputs=pad(input_ids, 0),  # any valid id: packing and the mask keep it out
        targets=pad(target_ids, IGNORE_INDEX),
        lengths=torch.tensor([len(s) for s in inputs], dtype=torch.long),
        texts=list(inputs),
    )


def pairs_dataset(pairs: Sequence[tuple[str, str]], vocab: Vocab | None = None) -> Dataset:
    """Aligned pairs; the vocabularies are inferred from them unless given."""
    if not pairs:
        raise DataError("pairs", "no training pairs given; provide at least one")
    for i, (source, target) in enumerate(pairs):
        if not source:
            raise DataError(f"pairs[{i}].input", "is empty")
        if len(source) != len(target):
            raise DataError(
                f"pairs[{i}]",
                f"input has {len(source)} characters but target has {len(target)}; "
                "aligned pairs map each input character to one output character",
            )
    inputs = [p[0] for p in pairs]
    targets = [p[1] for p in pairs]
    vocab = vocab or Vocab.from_pairs(inputs, targets)
    return Dataset("pairs", vocab, encode_examples(vocab, inputs, targets, "pairs[{i}]"))


def text_dataset(text: str, seq_len: int, vocab: Vocab | None = None) -> Dataset:
    """Next-character windows of ``seq_len`` over ``text`` (the last one may be shorter)."""
    if len(text) < 2:
        raise DataError("text", "needs at least 2 characters to learn a next character")
    vocab = vocab or Vocab.from_text(text)
    if not vocab.is_shared:
        raise DataError("vocab", "a text model reads its own output: input and output must match")
    vocab.encode_inputs([text], field="text")  # report unknown characters against the whole text
    starts = range(0, len(text) - 1, seq_len)
    inputs = [text[s : min(s + seq_len, len(text) - 1)] for s in starts]
    targets = [text[s + 1 : s + 1 + len(chunk)] for s, chunk in zip(starts, inputs, strict=True)]
    return Dataset("text", vocab, encode_examples(vocab, inputs, targets, "text"))


def classify_dataset(pairs: Sequence[tuple[str, str]], vocab: Vocab | None = None) -> Dataset:
    """Sequences and their labels; the input characters and the (sorted) labels are
    inferred from them unless given."""
    if not pairs:
        raise DataError("pairs", "no labeled sequences given; provide at least one")
    for i, (source, label) in enumerate(pairs):
        if not source:
            raise DataError(f"pairs[{i}].input", "is empty")
        problem = label_problem(label)
        if problem is not None:
            raise DataError(f"pairs[{i}].label", problem)
    inputs = [p[0] for p in pairs]
    labels = [p[1] for p in pairs]
    vocab = vocab or Vocab.from_labeled(inputs, labels)
    if vocab.labels is None:
        raise DataError("vocab", "a classifier's vocabulary needs labels, not output characters")
    input_ids = vocab.encode_inputs(inputs, field="pairs[{i}].input")
    examples = Examples(
        inputs=pad(input_ids, 0),
        targets=torch.tensor(vocab.encode_labels(labels), dtype=torch.long),  # (N,)
        lengths=torch.tensor([len(s) for s in inputs], dtype=torch.long),
        texts=inputs,
    )
    return Dataset("classify", vocab, examples)


def split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples | None]:
    """Hold out ``floor(fraction * N)`` examples at random (same seed, same split)."""
    held_out = int(fraction * len(examples))
    if held_out == 0:
        return examples, None
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    return examples.subset(order[held_out:]), examples.subset(order[:held_out])


def batches(examples: Examples, order: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """Slices of ``order``, each trimmed to its longest row so padding stays small."""
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        lengths = examples.lengths[index]
        width = int(lengths.max())
        targets = examples.targets[index]
        if targets.dim() == 2:  # per character; a classifier's (B,) labels have no width
            targets = targets[:, :width]
        yield Batch(examples.inputs[index, :width], targets, lengths)
