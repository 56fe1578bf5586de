"""What an evaluation will score, counted before any work: never fewer characters than
the examples it then scores (the bound must hold before anything is encoded)."""

from __future__ import annotations

import pytest

from app.jobs.spec import PairsData, TextData, TrainingData
from app.ml.data import pairs_dataset, split, text_dataset
from app.ml.hyperparameters import Hyperparameters
from app.serving.evaluation import EvaluateRequest, characters_of, held_out_characters
from tests.conftest import long_text

WORDS = ["abc", "bcad", "cabd", "dabca", "ab", "bca", "cdab", "abcd", "dcba", "bb", "acd", "d"]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("seq_len", [1, 7, 64])
def test_the_held_out_text_is_bounded_by_its_count(fraction: float, seq_len: int) -> None:
    text = long_text(1001)
    hp = Hyperparameters(seq_len=seq_len, validation_fraction=fraction, seed=0)
    _, held_out = split(text_dataset(text, seq_len).examples, fraction, 0)

    counted = held_out_characters(TextData(text=text), hp)

    scored = 0 if held_out is None else held_out.characters
    assert scored <= counted <= scored + seq_len  # only the last window may be shorter


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5])
def test_held_out_pairs_are_counted_padded_to_the_longest(fraction: float) -> None:
    pairs = [(w, w[::-1]) for w in WORDS]
    data = PairsData(pairs=[{"input": i, "target": t} for i, t in pairs])
    hp = Hyperparameters(validation_fraction=fraction, seed=0)
    _, held_out = split(pairs_dataset(pairs).examples, fraction, 0)

    counted = held_out_characters(data, hp)

    rows = 0 if held_out is None else len(held_out)
    assert counted == rows * 5  # "dabca", the longest input


def test_inline_data_is_counted_as_it_will_run() -> None:
    text: TrainingData = TextData(text="hello world")
    pairs: TrainingData = PairsData(
        pairs=[{"input": "a", "target": "b"}, {"input": "abcd", "target": "dcba"}]
    )
    assert characters_of(text) == 11
    assert characters_of(pairs) == 8  # two rows padded to four


@pytest.mark.parametrize(
    "body", [{}, {"split": "validation", "data": {"text": "ab"}}], ids=["neither", "both"]
)
def test_a_request_names_one_source(body: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="give either data"):
        EvaluateRequest.model_validate(body)


def test_a_source_may_be_left_out_but_not_null() -> None:
    with pytest.raises(ValueError, match="may be left out but not null"):
        EvaluateRequest.model_validate({"data": {"text": "ab"}, "split": None})
