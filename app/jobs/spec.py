"""A training job's specification: data, optional vocabularies and hyperparameters.

This is what ``POST /train`` accepts (``app.schemas`` reuses it) and what the
registry stores, so a worker on any machine rebuilds exactly the same dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    model_validator,
)
from typing_extensions import TypedDict

from app.ml.data import Dataset, pairs_dataset, text_dataset
from app.ml.hyperparameters import Hyperparameters, text_defaults
from app.ml.vocab import Vocab
from app.store.dataset_reader import load_dataset
from app.store.datasets import DATASET_ID_PATTERN
from app.store.layout import MODEL_NAME_PATTERN

ModelName = Annotated[
    str,
    Field(
        pattern=MODEL_NAME_PATTERN,
        min_length=1,
        max_length=64,
        description="Lowercase letters, digits, '-' and '_'; starts and ends alphanumeric.",
        examples=["hello"],
    ),
]


@dataclass(frozen=True)
class DatasetFacts:
    """What the registry knows of a job's uploaded dataset, for the checks before queueing."""

    kind: str
    characters: int
    examples: int  # rows (pairs, labels)
    longest: int  # the longest row's input (pairs are padded to it)


class Pair(TypedDict):
    """One aligned pair. A dict, not a model: 100,000 of them validate ten times faster,
    and validation holds the interpreter (the event loop's thread too) while it runs."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    input: Annotated[str, Field(min_length=1, examples=["hello"])]
    target: Annotated[str, Field(min_length=1, examples=["ohlol"])]


class PairsData(BaseModel):
    """Aligned pairs: the i-th input character maps to the i-th target character."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pairs: list[Pair] = Field(min_length=1)


class TextData(BaseModel):
    """Plain text for next-character modelling (enables ``/generate``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=2)


def _data_kind(value: Any) -> str | None:
    source = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    if "pairs" in source:
        return "pairs"
    return "text" if "text" in source else None


TrainingData = Annotated[
    Annotated[PairsData, Tag("pairs")] | Annotated[TextData, Tag("text")],
    Discriminator(
        _data_kind,
        custom_error_type="data_kind",
        custom_error_message="data needs either 'pairs' (aligned pairs) or 'text' (plain text)",
    ),
]


# a text model must not read ahead (see _no_peeking_at_the_future), in the JSON schema
TEXT_IS_NOT_BIDIRECTIONAL: dict[str, Any] = {
    "if": {"properties": {"data": {"required": ["text"]}}, "required": ["data"]},
    "then": {
        "properties": {"hyperparameters": {"properties": {"bidirectional": {"const": False}}}}
    },
}
# exactly one of the two sources of training data (see _data_or_dataset)
DATA_OR_DATASET: dict[str, Any] = {"oneOf": [{"required": ["data"]}, {"required": ["dataset"]}]}
DEVICE_PATTERN = r"^(auto|cpu|cuda(:(0|[1-9][0-9]?))?)$"


class JobSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"allOf": [TEXT_IS_NOT_BIDIRECTIONAL, DATA_OR_DATASET]},
    )

    model_name: ModelName
    data: TrainingData | None = Field(
        None, description="The training data inline (small jobs); or give ``dataset`` instead."
    )
    dataset: str | None = Field(
        None,
        pattern=DATASET_ID_PATTERN,
        description="The id of an uploaded dataset (POST /datasets) to train on, "
        "instead of inline ``data``.",
    )
    vocab: Vocab | None = Field(
        None, description="Input and output vocabularies; inferred from the data when absent."
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Those left out take their defaults, which depend on the data: the "
        "tutorial's (shown in the schema) for pairs; for text a GRU (cell gru, "
        "embedding_size 32, hidden_size 256, num_layers 1 (2 with dropout), "
        "learning_rate 0.003, batch_size 32, seq_len 100) and epochs enough to read about "
        "3.4 million characters (1 to 200). The job stores the values it trains with.",
    )
    device: str | None = Field(
        None,
        pattern=DEVICE_PATTERN,
        description="Where to train: auto, cpu or cuda[:N]; default: the service's setting.",
    )

    # from the validation context ("dataset"), given where the dataset was looked up
    # (``app.jobs.submit``); a worker, which reads the dataset itself, goes without
    _dataset_facts: DatasetFacts | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _text_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """Fill what a text job leaves out with the text defaults; given values win.

        Done before validation, so that the hyperparameters are checked (and stored)
        as the job will use them. A service whose limits are below a text default
        (``hyperparameter_limits`` in the validation context) gives its limit instead.
        """
        characters = _text_characters(value, info)
        if characters is None:
            return value
        given = value.get("hyperparameters", {})
        if isinstance(given, Hyperparameters):
            given = given.model_dump(include=given.model_fields_set)
        if not isinstance(given, dict):
            return value  # not what it should be: left to validation to refuse
        defaults = text_defaults(characters)
        limits = (info.context or {}).get("hyperparameter_limits", {})
        for name, limit in limits.items():
            if name in defaults:
                defaults[name] = min(defaults[name], limit)
        if given.get("dropout") and "num_layers" not in given:
            # dropout acts between layers: the schema promises that a field left out
            # satisfies every rule, as the tutorial's 2 layers do
            defaults["num_layers"] = 2
        return {**value, "hyperparameters": {**defaults, **given}}

    @model_validator(mode="after")
    def _data_or_dataset(self, info: ValidationInfo) -> Self:
        if (self.data is None) == (self.dataset is None):
            raise ValueError(
                "give the training data either inline as 'data' or as the id of an uploaded "
                "'dataset', exactly one of them"
            )
        facts = (info.context or {}).get("dataset")
        if self.dataset is not None and isinstance(facts, DatasetFacts):
            self._dataset_facts = facts
        return self

    @model_validator(mode="after")
    def _no_peeking_at_the_future(self) -> Self:
        if self.is_text and self.hyperparameters.bidirectional:
            raise ValueError(
                "hyperparameters.bidirectional would let a text model read the character it "
                "must predict; use it with aligned pairs only"
            )
        return self

    @property
    def is_text(self) -> bool:
        """Next-character modelling: inline text, or a text dataset (once looked up)."""
        facts = self.dataset_facts
        return isinstance(self.data, TextData) or (facts is not None and facts.kind == "text")

    @property
    def dataset_facts(self) -> DatasetFacts | None:
        return self._dataset_facts

    @property
    def characters(self) -> int:
        if isinstance(self.data, TextData):
            return len(self.data.text)
        if isinstance(self.data, PairsData):
            return sum(len(p["input"]) for p in self.data.pairs)
        return self._dataset_facts.characters if self._dataset_facts else 0


def _text_characters(value: Any, info: ValidationInfo) -> int | None:
    """The characters of a text job's data, before validation; None for other jobs."""
    if not isinstance(value, dict):
        return None
    if _data_kind(value.get("data")) == "text":
        data = value["data"]
        text = data["text"] if isinstance(data, dict) else data.text
        return len(text) if isinstance(text, str) else None
    facts = (info.context or {}).get("dataset")
    if value.get("dataset") is not None and isinstance(facts, DatasetFacts):
        return facts.characters if facts.kind == "text" else None
    return None


def build_dataset(spec: JobSpec, store_dir: Path | None = None) -> Dataset:
    """Encode the job's data, or load its dataset from the store under ``store_dir``;
    raises the engine's DataError / UnknownCharactersError."""
    if spec.dataset is not None:
        if store_dir is None:
            raise ValueError("a job on a stored dataset needs the store's directory")
        _, dataset = load_dataset(store_dir, spec.dataset, spec.hyperparameters.seq_len, spec.vocab)
        return dataset
    if isinstance(spec.data, TextData):
        return text_dataset(spec.data.text, spec.hyperparameters.seq_len, spec.vocab)
    assert spec.data is not None  # _data_or_dataset
    return pairs_dataset([(p["input"], p["target"]) for p in spec.data.pairs], spec.vocab)
