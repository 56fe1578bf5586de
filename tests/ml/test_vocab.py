"""Vocabularies: which characters a model reads and writes, and how they are encoded."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from app.ml.errors import DataError, UnknownCharacter, UnknownCharactersError, VocabularyError
from app.ml.vocab import MAX_VOCAB_SIZE, Vocab, one_hot

# the tutorial's encoding of "hello" -> "ohlol"
IDX2CHAR = ["e", "h", "l", "o"]
X_DATA = [1, 0, 2, 2, 3]
Y_DATA = [3, 1, 2, 3, 2]
ONE_HOT_LOOKUP = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_vocab_inferred_from_pairs_is_sorted_per_side() -> None:
    vocab = Vocab.from_pairs(["hello"], ["ohlol"])

    assert vocab.input == IDX2CHAR
    assert vocab.output == ["h", "l", "o"]  # only what the targets use
    assert not vocab.is_shared


def test_vocab_inferred_from_text_is_shared() -> None:
    vocab = Vocab.from_text("abracadabra")

    assert vocab.input == vocab.output == ["a", "b", "c", "d", "r"]
    assert vocab.is_shared


def test_data_with_more_characters_than_a_vocabulary_holds_is_refused() -> None:
    chars = "".join(chr(0x100 + i) for i in range(MAX_VOCAB_SIZE + 1))

    with pytest.raises(DataError, match="^text: 1025 distinct characters in the text; ") as text:
        Vocab.from_text(chars)
    with pytest.raises(DataError, match="^pairs: 1025 distinct characters in the targets; "):
        Vocab.from_pairs(["a" * len(chars)], [chars])

    assert text.value.message.endswith("a vocabulary holds at most 1024")
    assert len(Vocab.from_text(chars[:-1]).input) == MAX_VOCAB_SIZE  # the limit itself is fine


def test_explicit_vocab_keeps_the_given_order() -> None:
    vocab = Vocab(input=["o", "l", "h", "e"], output=["x", "y"])

    assert vocab.encode_inputs(["hello"]) == [[2, 3, 1, 1, 0]]
    assert vocab.decode_output([1, 0, 0]) == "yxx"


def test_encoding_matches_the_tutorial(tutorial_vocab: Vocab) -> None:
    assert tutorial_vocab.encode_inputs(["hello"]) == [X_DATA]
    assert tutorial_vocab.encode_targets(["ohlol"]) == [Y_DATA]
    assert tutorial_vocab.decode_output(Y_DATA) == "ohlol"


def test_one_hot_matches_the_tutorials_lookup_table() -> None:
    x_one_hot = [ONE_HOT_LOOKUP[x] for x in X_DATA]

    assert torch.equal(one_hot(torch.tensor(X_DATA), 4), torch.Tensor(x_one_hot))


def test_one_hot_refuses_ids_outside_the_vocabulary() -> None:
    with pytest.raises(VocabularyError, match=r"ids must lie in \[0, 4\)"):
        one_hot(torch.tensor([0, 4]), 4)


@pytest.mark.parametrize(
    ("chars", "message"),
    [
        (["a", "b", "a"], r"characters must be distinct, repeated: \['a'\]"),
        (["a", "bc"], r"every entry must be exactly one character, got \['bc'\]"),
        (["a", ""], r"every entry must be exactly one character, got \[''\]"),
        ([], r"at least 1 item"),
        (["a", "\ud800"], r"lone surrogates are not characters of any text: \['\\ud800'\]"),
    ],
    ids=["duplicate", "multi-char", "empty-string", "empty-list", "lone-surrogate"],
)
def test_malformed_vocabulary_is_refused(chars: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        Vocab(input=chars, output=["x"])

    assert caught.value.errors()[0]["loc"] == ("input",)


def test_unknown_characters_are_all_reported_at_once(tutorial_vocab: Vocab) -> None:
    with pytest.raises(UnknownCharactersError) as caught:
        tutorial_vocab.encode_inputs(["help", "oh", "xx"])

    assert caught.value.unknown == [
        UnknownCharacter(input_index=0, position=3, character="p"),
        UnknownCharacter(input_index=2, position=0, character="x"),
        UnknownCharacter(input_index=2, position=1, character="x"),
    ]
    assert str(caught.value) == (
        "unknown characters: 'p' at position 3 of inputs[0], 'x' at position 0 of inputs[2], "
        "'x' at position 1 of inputs[2]; the vocabulary is 'ehlo'"
    )


def test_unknown_characters_message_names_the_field_and_stays_short() -> None:
    vocab = Vocab(input=["a"], output=["a"])

    with pytest.raises(UnknownCharactersError, match=r"of targets\[0\].*\(and 5 more\)"):
        vocab.encode_targets(["b" * 25])
