"""Character vocabularies and the two encodings the models use.

A vocabulary is an ordered list of distinct single characters; a character's id is
its index. The tutorial's ``idx2char = ['e', 'h', 'l', 'o']`` is such a list.
Inputs and outputs have separate vocabularies (the tutorial's happen to coincide);
a text model reads and writes the same one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.ml.errors import DataError, UnknownCharacter, UnknownCharactersError, VocabularyError

MAX_VOCAB_SIZE = 1024

# The schema states what _check_characters enforces (one error naming every bad entry)
Character = Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": 1})]
CharList = Annotated[
    list[Character],
    Field(
        min_length=1,
        max_length=MAX_VOCAB_SIZE,
        description="Distinct single characters; a character's id is its index.",
        examples=[["e", "h", "l", "o"]],
        json_schema_extra={"uniqueItems": True},
    ),
]


def _check_characters(chars: list[str]) -> list[str]:
    bad = [c for c in chars if len(c) != 1]
    if bad:
        raise ValueError(f"every entry must be exactly one character, got {bad[:5]!r}")
    # JSON's "\ud800" escapes decode to them, but no text can hold one: a checkpoint
    # naming one could never be written
    surrogates = [c for c in chars if "\ud800" <= c <= "\udfff"]
    if surrogates:
        raise ValueError(f"lone surrogates are not characters of any text: {surrogates[:5]!r}")
    repeated = sorted(c for c, n in Counter(chars).items() if n > 1)
    if repeated:
        raise ValueError(f"characters must be distinct, repeated: {repeated!r}")
    return chars


def chars_of(texts: Iterable[str]) -> list[str]:
    """The sorted set of characters used by ``texts``."""
    return sorted(set().union(*map(set, texts)))


def inferred_chars(texts: Iterable[str], field: str, what: str) -> list[str]:
    """The characters of training data as a vocabulary; DataError if too many for one."""
    chars = chars_of(texts)
    if len(chars) > MAX_VOCAB_SIZE:
        raise DataError(
            field,
            f"{len(chars)} distinct characters in {what}; a vocabulary holds at most "
            f"{MAX_VOCAB_SIZE}",
        )
    return chars


class Vocab(BaseModel):
    """The input and output vocabularies of a model."""

    model_config = ConfigDict(frozen=True, strict=True)

    input: CharList
    output: CharList

    _check_input = field_validator("input")(_check_characters)
    _check_output = field_validator("output")(_check_characters)

    @classmethod
    def from_pairs(cls, inputs: Iterable[str], targets: Iterable[str]) -> Vocab:
        """Infer both vocabularies from aligned training pairs."""
        return cls(
            input=inferred_chars(inputs, "pairs", "the inputs"),
            output=inferred_chars(targets, "pairs", "the targets"),
        )

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """One shared vocabulary for next-character modelling of ``text``."""
        chars = inferred_chars([text], "text", "the text")
        return cls(input=chars, output=chars)

    @cached_property
    def input_ids(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.input)}

    @cached_property
    def output_ids(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.output)}

    @property
    def is_shared(self) -> bool:
        """True when outputs can be fed back as inputs (needed for generation)."""
        return self.input == self.output

    def encode_inputs(self, texts: Sequence[str], field: str = "inputs[{i}]") -> list[list[int]]:
        return _encode(texts, self.input_ids, self.input, field)

    def encode_targets(self, texts: Sequence[str], field: str = "targets[{i}]") -> list[list[int]]:
        return _encode(texts, self.output_ids, self.output, field)

    def decode_output(self, ids: Iterable[int]) -> str:
        return "".join(self.output[i] for i in ids)


def _encode(
    texts: Sequence[str], ids: dict[str, int], allowed: list[str], field: str
) -> list[list[int]]:
    """Index-encode every text, or report every unknown character at once."""
    unknown = [
        UnknownCharacter(input_index=i, position=p, character=c)
        for i, text in enumerate(texts)
        for p, c in enumerate(text)
        if c not in ids
    ]
    if unknown:
        raise UnknownCharactersError(field, unknown, allowed)
    return [[ids[c] for c in text] for text in texts]


def one_hot(ids: torch.Tensor, size: int) -> torch.Tensor:
    """Index tensor (...) -> float one-hot (..., size), the tutorial's ``one_hot_lookup``."""
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
        raise VocabularyError(f"ids must lie in [0, {size}), got {ids.min()}..{ids.max()}")
    return torch.nn.functional.one_hot(ids, size).float()
