"""Training data: aligned pairs, plain text or labeled sequences, encoded once, batched
with padding.

Pairs map each input character to the target character at the same position
("hello" -> "ohlol"). Plain text becomes next-character windows: the input is
``text[i : i + seq_len]`` and the target the same window shifted by one. Labeled
sequences ("Nakamura" -> "Japanese") hold one target per row, the label's id: their
targets are (N,) rather than (N, T_max).

Rows of a batch are right-padded; padded targets hold ``IGNORE_INDEX`` so they
never count towards loss or accuracy, and ``lengths`` lets the models pack.

Two kinds of examples share one interface (``len``, ``characters``, ``width``,
``subset``, ``batch``, ``sample``): ``Examples`` holds every row padded in memory;
``TextWindows`` holds only the window starts over one 1-D array of character ids (a
memory map for an uploaded dataset), so a corpus of 100 MB trains in bounded memory:
a batch gathers its windows from the array when it is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
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

    @property
    def width(self) -> int:
        """The longest row."""
        return self.inputs.size(1)

    def subset(self, index: torch.Tensor) -> Examples:
        return Examples(
            self.inputs[index],
            self.targets[index],
            self.lengths[index],
            [self.texts[i] for i in index.tolist()],
        )

    def batch(self, index: torch.Tensor) -> Batch:
        """The rows ``index``, trimmed to their longest so padding stays small."""
        lengths = self.lengths[index]
        width = int(lengths.max())
        targets = self.targets[index]
        if targets.dim() == 2:  # per character; a classifier's (B,) labels have no width
            targets = targets[:, :width]
        return Batch(self.inputs[index, :width], targets, lengths)

    def sample(self, i: int) -> tuple[str, torch.Tensor]:
        """Example ``i`` as text and as input ids (1, T), for sample predictions."""
        length = int(self.lengths[i])
        return self.texts[i], self.inputs[i : i + 1, :length]


class TextWindows:
    """Next-character windows over ``ids``, a 1-D array of character ids: window ``k``
    starts at ``starts[k]``, reads ``seq_len`` ids (fewer at the end) and its targets are
    the same ids shifted by one. ``table`` maps the array's ids to the vocabulary's when
    they differ (a job's own vocabulary over a stored dataset)."""

    def __init__(
        self,
        ids: npt.NDArray[np.integer],
        seq_len: int,
        vocab: Vocab,
        starts: npt.NDArray[np.int64] | None = None,
        table: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self.ids, self.seq_len, self.vocab, self.table = ids, seq_len, vocab, table
        # the same starts as inline text: 0, seq_len, 2 * seq_len, ... before the last id
        self.starts = np.arange(0, len(ids) - 1, seq_len) if starts is None else starts

    def __len__(self) -> int:
        return len(self.starts)

    def _lengths(self, starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.minimum(self.seq_len, len(self.ids) - 1 - starts)

    @property
    def characters(self) -> int:
        return int(self._lengths(self.starts).sum())

    @property
    def width(self) -> int:
        return int(self._lengths(self.starts).max(initial=0))

    def subset(self, index: torch.Tensor) -> TextWindows:
        starts = self.starts[index.numpy()]
        return TextWindows(self.ids, self.seq_len, self.vocab, starts, self.table)

    def _gather(self, starts: npt.NDArray[np.int64], width: int) -> torch.Tensor:
        """ids[start : start + width] for every start, clipped at the end: (B, width)."""
        positions = np.minimum(starts[:, None] + np.arange(width), len(self.ids) - 1)
        ids = np.asarray(self.ids[positions], dtype=np.int64)  # reads only these windows
        return torch.from_numpy(ids if self.table is None else self.table[ids])

    def batch(self, index: torch.Tensor) -> Batch:
        starts = self.starts[index.numpy()]
        lengths = torch.from_numpy(self._lengths(starts).astype(np.int64))
        width = int(lengths.max())
        past_end = torch.arange(width) >= lengths[:, None]  # (B, width) padding
        inputs = self._gather(starts, width).masked_fill(past_end, 0)
        targets = self._gather(starts + 1, width).masked_fill(past_end, IGNORE_INDEX)
        return Batch(inputs, targets, lengths)

    def sample(self, i: int) -> tuple[str, torch.Tensor]:
        inputs = self.batch(torch.tensor([i])).inputs  # (1, T)
        return "".join(self.vocab.input[j] for j in inputs[0].tolist()), inputs


ExampleSet = Examples | TextWindows


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
    examples: ExampleSet


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


def split(examples: ExampleSet, fraction: float, seed: int) -> tuple[ExampleSet, ExampleSet | None]:
    """Hold out ``floor(fraction * N)`` examples at random (same seed, same split)."""
    held_out = int(fraction * len(examples))
    if held_out == 0:
        return examples, None
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    return examples.subset(order[held_out:]), examples.subset(order[:held_out])


def batches(examples: ExampleSet, order: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """Slices of ``order``, each trimmed to its longest row so padding stays small."""
    for start in range(0, len(order), batch_size):
        yield examples.batch(order[start : start + batch_size])
