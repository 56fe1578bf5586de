"""Hyperparameters: defaults, bounds and combinations refused before any work starts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.ml.hyperparameters import Hyperparameters
from app.ml.model import ModelConfig
from app.ml.vocab import Vocab


def test_defaults_are_the_tutorials_last_model() -> None:
    hp = Hyperparameters()

    assert hp.architecture == "embedding_rnn"
    assert (hp.embedding_size, hp.hidden_size, hp.num_layers) == (10, 8, 2)
    assert (hp.optimizer, hp.learning_rate, hp.epochs) == ("adam", 0.05, 15)


def test_hyperparameters_round_trip_through_json() -> None:
    hp = Hyperparameters(architecture="rnn", cell="gru", num_layers=3, dropout=0.2, seed=7)

    assert Hyperparameters.model_validate_json(hp.model_dump_json()) == hp


def test_hyperparameters_are_frozen() -> None:
    hp = Hyperparameters()

    with pytest.raises(ValidationError, match="frozen"):
        hp.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hidden_size": -1}, "hidden_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"epochs": 0}, "epochs"),
        ({"validation_fraction": 0.9}, "validation_fraction"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"architecture": "transformer"}, "architecture"),
        ({"colour": "blue"}, "colour"),
    ],
    ids=[
        "negative-hidden-size",
        "zero-learning-rate",
        "zero-epochs",
        "validation-fraction-too-big",
        "unknown-optimizer",
        "unknown-architecture",
        "extra-field",
    ],
)
def test_nonsense_value_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Hyperparameters(**fields)

    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_bidirectional_needs_the_embedding_architecture() -> None:
    with pytest.raises(ValidationError, match="bidirectional needs architecture 'embedding_rnn'"):
        Hyperparameters(architecture="rnn_cell", bidirectional=True)


@pytest.mark.parametrize(
    "fields",
    [{"num_layers": 1, "dropout": 0.2}, {"architecture": "rnn_cell", "dropout": 0.2}],
    ids=["one-layer", "rnn-cell"],
)
def test_dropout_needs_two_recurrent_layers(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="dropout acts between recurrent layers"):
        Hyperparameters(**fields)


# --- stored as used -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "used"),
    [
        ("rnn_cell", (None, None, 1)),  # one cell, one-hot in, as wide as the vocabulary
        ("rnn", (None, None, 2)),  # fused layers, one-hot in, as wide as the vocabulary
        ("embedding_rnn", (16, 64, 2)),
    ],
)
def test_hyperparameters_hold_what_the_architecture_uses(
    architecture: str, used: tuple[int | None, int | None, int]
) -> None:
    hp = Hyperparameters(architecture=architecture, embedding_size=16, hidden_size=64)

    assert (hp.embedding_size, hp.hidden_size, hp.num_layers) == used
    assert Hyperparameters.model_validate_json(hp.model_dump_json()) == hp


@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn", "embedding_rnn"])
def test_the_model_built_is_the_one_the_hyperparameters_describe(architecture: str) -> None:
    vocab = Vocab.from_pairs(["hello"], ["ohlol"])
    hp = Hyperparameters(architecture=architecture, hidden_size=64)

    config = ModelConfig.from_hyperparameters(hp, vocab)

    assert config.hidden_size == (hp.hidden_size or len(vocab.output))
    assert (config.embedding_size, config.num_layers) == (hp.embedding_size, hp.num_layers)


def test_null_sizes_are_refused_where_the_architecture_needs_them() -> None:
    with pytest.raises(ValidationError, match="hidden_size may be null only for"):
        Hyperparameters(hidden_size=None)
    with pytest.raises(ValidationError, match="embedding_size may be null only for"):
        Hyperparameters(embedding_size=None)


def test_a_checkpoints_config_from_before_lists_no_embedding_for_one_hot_models() -> None:
    # such checkpoints recorded the embedding_size the one-hot models never had
    old = {
        "architecture": "rnn_cell",
        "cell": "rnn",
        "input_size": 4,
        "output_size": 4,
        "embedding_size": 10,
        "hidden_size": 4,
        "num_layers": 1,
        "bidirectional": False,
        "dropout": 0.0,
    }

    assert ModelConfig.model_validate(old).embedding_size is None
