"""The in-process references: a model's raw forward throughput, and a plain training loop."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy
import torch
from torch import nn

from app.ml.checkpoint import load_checkpoint
from app.ml.hyperparameters import Hyperparameters
from app.ml.model import build_model


@contextmanager
def on_one_core(threads: int = 1) -> Iterator[None]:
    """Measure in process on the servers' core; the harness goes back to its own after."""
    affinity, before = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {0})
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(before)


def raw_forward_throughput(version_dir: Path, text: str, batch: int, runs: int = 3) -> float:
    """Sequences per second of ``model(ids)`` alone, at ``batch`` sequences per call."""
    checkpoint = load_checkpoint(version_dir)
    model = build_model(checkpoint.config)
    model.load_state_dict(checkpoint.weights)
    model.eval()
    ids = torch.tensor([checkpoint.vocab.encode_inputs([text])[0]] * batch)
    rates = []
    with on_one_core(), torch.inference_mode():
        for _ in range(runs):
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 2.0:
                model(ids)
                calls += 1
            rates.append(calls * batch / (time.perf_counter() - started))
    return statistics.median(rates)


class PlainModel(nn.Module):
    """Embedding -> GRU -> Linear, written as anyone would, without charnn."""

    def __init__(self, vocab: int, hp: Hyperparameters) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hp.embedding_size)
        self.rnn = nn.GRU(hp.embedding_size, hp.hidden_size, hp.num_layers, batch_first=True)
        self.head = nn.Linear(hp.hidden_size, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(ids))
        return self.head(out)  # type: ignore[no-any-return]


def plain_training_throughput(text: str, hp: Hyperparameters, threads: int) -> float:
    """Characters per second of a plain batched loop over ``seq_len`` windows of ``text``."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text])
    windows = (len(text) - 1) // hp.seq_len
    inputs = data[: windows * hp.seq_len].view(windows, hp.seq_len)
    targets = data[1 : windows * hp.seq_len + 1].view(windows, hp.seq_len)
    torch.manual_seed(0)
    model = PlainModel(len(chars), hp)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.learning_rate)
    rates = []
    with on_one_core(threads):
        for _ in range(hp.epochs):
            started = time.perf_counter()
            for order in torch.randperm(windows).split(hp.batch_size):
                optimizer.zero_grad()
                logits = model(inputs[order])
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, len(chars)), targets[order].reshape(-1)
                )
                loss.backward()
                optimizer.step()
            rates.append(windows * hp.seq_len / (time.perf_counter() - started))
    return statistics.median(rates[1:])  # the first epoch pays torch's warm-up


def corpus_ids(path: Path) -> tuple[torch.Tensor, int]:
    """A text file as a tensor of character ids (sorted vocabulary), and the vocabulary's size."""
    codes = numpy.frombuffer(path.read_text(encoding="utf-8").encode("utf-32-le"), numpy.uint32)
    chars, ids = numpy.unique(codes, return_inverse=True)
    return torch.from_numpy(ids.astype(numpy.int16)), len(chars)


def plain_corpus_throughput(
    ids: torch.Tensor, vocab: int, hp: Hyperparameters, seconds: float, threads: int = 1
) -> float:
    """Characters per second of a plain loop over shuffled ``seq_len`` windows of a corpus
    far larger than one run reads, for ``seconds`` after a warm-up of a few steps."""
    windows = (len(ids) - 1) // hp.seq_len
    offsets = torch.arange(hp.seq_len)
    torch.manual_seed(0)
    model = PlainModel(vocab, hp)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.learning_rate)
    with on_one_core(threads):
        characters, started = 0, time.perf_counter()
        for step, order in enumerate(torch.randperm(windows).split(hp.batch_size), 1):
            index = (order * hp.seq_len)[:, None] + offsets  # (B, T) positions in the corpus
            inputs, targets = ids[index].long(), ids[index + 1].long()
            optimizer.zero_grad()
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
            loss.backward()
            optimizer.step()
            if step == 5:  # torch's warm-up left out, as the job's first steps are
                characters, started = 0, time.perf_counter()
            else:
                characters += targets.numel()
            if time.perf_counter() - started > seconds:
                break
    return characters / (time.perf_counter() - started)
