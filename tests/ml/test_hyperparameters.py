"""Hyperparameters: defaults, bounds and combinations refused before any work starts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.ml.hyperparameters import Hyperparameters


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
