"""Fixtures of the engine's tests: the tutorial's data and a few small trained models.

Tests marked ``gpu`` run on CUDA where torch sees a device and are skipped, with the
reason, everywhere else (CI has none).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.ml.checkpoint import Checkpoint
from app.ml.data import pairs_dataset, text_dataset
from app.ml.hyperparameters import Hyperparameters
from app.ml.train import TrainingSession, train
from app.ml.vocab import Vocab

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason=f"no CUDA device: torch {torch.__version__} reports torch.cuda.is_available() "
        "is False"
    )
    for item in items:
        if HERE in item.path.parents and item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def cuda_fp32(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """The GPU, with cuDNN's recurrent layers in full fp32 rather than their default TF32,
    so that CUDA and CPU logits can be compared at 1e-5."""
    monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "ieee")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def tutorial_vocab() -> Vocab:
    """The tutorial's ``idx2char = ['e', 'h', 'l', 'o']``, for inputs and outputs alike.

    ``Vocab.from_pairs`` would infer the output vocabulary ['h', 'l', 'o'] from "ohlol"
    alone; the tutorial keeps 'e' as a fourth output class.
    """
    return Vocab(input=["e", "h", "l", "o"], output=["e", "h", "l", "o"])


@pytest.fixture(scope="session")
def hello_checkpoint() -> Checkpoint:
    """The tutorial's last model (Embedding -> 2-layer RNN -> Linear) trained on
    "hello" -> "ohlol" until it predicts it; on the CPU, seed 0."""
    hp = Hyperparameters(architecture="embedding_rnn", epochs=30, seed=0, validation_fraction=0.0)
    session = TrainingSession.start(hp, pairs_dataset([("hello", "ohlol")]), torch.device("cpu"))
    train(session)
    return session.checkpoint(with_training_state=False)


@pytest.fixture(scope="session")
def text_checkpoint() -> Checkpoint:
    """A small next-character model of a repetitive text, LSTM cells, seed 0."""
    hp = Hyperparameters(
        cell="lstm",
        hidden_size=16,
        num_layers=1,
        learning_rate=0.05,
        epochs=40,
        seq_len=8,
        batch_size=4,
        validation_fraction=0.0,
        seed=0,
    )
    dataset = text_dataset("the cat sat on the mat. " * 4, seq_len=hp.seq_len)
    session = TrainingSession.start(hp, dataset, torch.device("cpu"))
    train(session)
    return session.checkpoint(with_training_state=False)
