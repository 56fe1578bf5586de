"""Character vocabularies and the two encodings the models use.

A vocabulary is an ordered list of distinct single characters; a character's id is
its index. The tutorial's ``idx2char = ['e', 'h', 'l', 'o']`` is such a list.
Inputs and outputs have separate vocabularies (the tutorial's happen to coincide);
a text model reads and writes the same one.

A classifier reads characters but writes one label per sequence: its ``Vocab`` has
``labels`` (a label's id is its index) and no ``output`` characters.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Annotated, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from app.ml.errors import DataError, UnknownCharacter, UnknownCharactersError, VocabularyError

MAX_VOCAB_SIZE = 1024
MAX_LABEL_LENGTH = 64

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


# The schema states what _check_labels enforces (one message naming the bad label)
Label = Annotated[
    str,
    Field(
        examples=["Japanese"],
        json_schema_extra={
            "minLength": 1,
            "maxLength": MAX_LABEL_LENGTH,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
        },
    ),
]
LabelList = Annotated[
    list[Label],
    Field(
        min_length=1,
        max_length=MAX_VOCAB_SIZE,
        description="Distinct class labels of a classifier; a label's id is its index.",
        examples=[["English", "Japanese"]],
        json_schema_extra={"uniqueItems": True},
    ),
]


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class label, or None when it can."""
    if not 1 <= len(label) <= MAX_LABEL_LENGTH:
        return f"has {len(label)} characters; a label has 1 to {MAX_LABEL_LENGTH}"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in label):
        return "holds control characters or lone surrogates; a label is printable text"
    return None


def _check_labels(labels: list[str] | None) -> list[str] | None:
    if labels is None:
        return None
    bad = [(label, problem) for label in labels if (problem := label_problem(label))]
    if bad:
        raise ValueError(f"label {bad[0][0]!r} {bad[0][1]}")
    repeated = sorted(label for label, n in Counter(labels).items() if n > 1)
    if repeated:
        raise ValueError(f"labels must be distinct, repeated: {repeated[:5]!r}")
    return labels


def _check_characters(chars: list[str] | None) -> list[str] | None:
    if chars is None:
        return None
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


# _output_or_labels in the JSON schema: exactly one of the two is a list (as if/then/else:
# client generators read a oneOf of partial schemas as a union of types they cannot build)
LABELS_ARE_A_LIST: JsonValue = {"properties": {"labels": {"type": "array"}}, "required": ["labels"]}
OUTPUT_OR_LABELS: JsonValue = {
    "if": LABELS_ARE_A_LIST,
    "then": {"not": {"properties": {"output": {"type": "array"}}, "required": ["output"]}},
    "else": {"properties": {"output": {"type": "array"}}, "required": ["output"]},
}


class Vocab(BaseModel):
    """The input vocabulary of a model, and its output: characters or class labels."""

    model_config = ConfigDict(
        frozen=True, strict=True, json_schema_extra={"allOf": [OUTPUT_OR_LABELS]}
    )

    input: CharList
    # written only when set: a character model's vocabulary reads as it did before
    # labels existed, and a classifier's has no output characters to pretend
    output: CharList | None = Field(
        None,
        description="Output characters (pairs, text); absent for a classifier.",
        exclude_if=lambda value: value is None,
    )
    labels: LabelList | None = Field(
        None,
        description="A classifier's labels (task classify); absent for the others.",
        exclude_if=lambda value: value is None,
    )

    _check_input = field_validator("input")(_check_characters)
    _check_output = field_validator("output")(_check_characters)
    _check_label_list = field_validator("labels")(_check_labels)

    @model_validator(mode="after")
    def _output_or_labels(self) -> Self:
        if (self.output is None) == (self.labels is None):
            raise ValueError(
                "give either output (characters, for pairs and text) or labels (for a "
                "classifier), not both and not neither"
            )
        return self

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

    @classmethod
    def from_labeled(cls, inputs: Iterable[str], labels: Iterable[str]) -> Vocab:
        """Input characters and the sorted set of labels of classification examples."""
        distinct = sorted(set(labels))
        if len(distinct) > MAX_VOCAB_SIZE:
            raise DataError(
                "pairs",
                f"{len(distinct)} distinct labels; a classifier has at most {MAX_VOCAB_SIZE}",
            )
        return cls(input=inferred_chars(inputs, "pairs", "the inputs"), labels=distinct)

    @property
    def output_chars(self) -> list[str]:
        """The output characters; VocabularyError for a classifier, which has none."""
        if self.output is None:
            raise VocabularyError("a classifier's vocabulary has labels, not output characters")
        return self.output

    @property
    def output_size(self) -> int:
        """How many outputs the model scores: output characters or labels."""
        return len(self.labels if self.labels is not None else self.output_chars)

    @cached_property
    def input_ids(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.input)}

    @cached_property
    def output_ids(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.output_chars)}

    @cached_property
    def label_ids(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    @property
    def is_shared(self) -> bool:
        """True when outputs can be fed back as inputs (needed for generation)."""
        return self.input == self.output

    def encode_inputs(self, texts: Sequence[str], field: str = "inputs[{i}]") -> list[list[int]]:
        return _encode(texts, self.input_ids, self.input, field)

    def encode_targets(self, texts: Sequence[str], field: str = "targets[{i}]") -> list[list[int]]:
        return _encode(texts, self.output_ids, self.output_chars, field)

    def encode_labels(self, labels: Sequence[str], field: str = "pairs[{i}].label") -> list[int]:
        """Label ids; DataError naming the first label outside ``labels``."""
        ids = self.label_ids
        for i, label in enumerate(labels):
            if label not in ids:
                raise DataError(
                    field.format(i=i),
                    f"label {label!r} is not one of vocab.labels ({len(ids)} labels); "
                    "add it there or leave vocab out to infer the labels",
                )
        return [ids[label] for label in labels]

    def decode_output(self, ids: Iterable[int]) -> str:
        output = self.output_chars
        return "".join(output[i] for i in ids)


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
