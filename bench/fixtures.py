"""The two benchmark models, published into a charnn store like any trained version.

- tutorial: the tutorial's last model (Embedding 10 -> RNN 8 x 2 -> Linear), input "hello"
- medium: GRU, 2 layers, hidden 256, embedding 64, a 65-character vocabulary,
  64-character inputs

Throughput does not depend on what the weights learned, so the models are trained
for one epoch on made-up data: enough to be real, published, verified versions.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path

import torch

from app.ml.data import pairs_dataset, text_dataset
from app.ml.hyperparameters import Hyperparameters
from app.ml.train import TrainingSession, train
from app.ml.vocab import Vocab
from app.store.layout import StoreLayout
from app.store.publish import publish_checkpoint
from app.store.registry import Registry

MEDIUM_CHARS = string.ascii_letters + string.digits + " .,"  # 65 characters
assert len(MEDIUM_CHARS) == 65


@dataclass(frozen=True)
class BenchModel:
    name: str
    hyperparameters: Hyperparameters
    example_input: str


TUTORIAL = BenchModel(
    "tutorial",
    Hyperparameters(
        architecture="embedding_rnn",
        embedding_size=10,
        hidden_size=8,
        num_layers=2,
        epochs=1,
        seed=0,
        validation_fraction=0,
    ),
    "hello",
)
MEDIUM = BenchModel(
    "medium",
    Hyperparameters(
        architecture="embedding_rnn",
        cell="gru",
        embedding_size=64,
        hidden_size=256,
        num_layers=2,
        epochs=1,
        seed=0,
        batch_size=32,
        seq_len=64,
        validation_fraction=0,
    ),
    "".join(random.Random(0).choice(MEDIUM_CHARS) for _ in range(64)),
)


def medium_text(characters: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(MEDIUM_CHARS) for _ in range(characters))


def train_model(model: BenchModel) -> TrainingSession:
    if model is TUTORIAL:
        vocab = Vocab(input=list("ehlo"), output=list("ehlo"))
        dataset = pairs_dataset([("hello", "ohlol")], vocab)
    else:
        dataset = text_dataset(medium_text(64 * 32), 64, Vocab.from_text(MEDIUM_CHARS))
    session = TrainingSession.start(model.hyperparameters, dataset, torch.device("cpu"))
    train(session)
    return session


def publish(store: Path, model: BenchModel, versions: int = 1) -> list[Path]:
    """Publish ``versions`` versions of ``model`` into a charnn store; their directories."""
    layout = StoreLayout(store)
    layout.ensure()
    registry = Registry.connect(f"sqlite:///{layout.root / 'registry.db'}")
    checkpoint = train_model(model).checkpoint(with_training_state=False)
    paths = []
    for _ in range(versions):
        row = publish_checkpoint(registry, layout, model.name, checkpoint)
        paths.append(layout.version_dir(model.name, row.directory))
    registry.close()
    return paths
