"""A training job's specification: data, optional vocabularies and hyperparameters.

Three kinds of data, three tasks: pairs with a ``target`` (aligned transduction), pairs
with a ``label`` (sequence classification) and plain ``text`` (next character).

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
    JsonValue,
    PrivateAttr,
    Tag,
    ValidationInfo,
    model_validator,
)
from typing_extensions import TypedDict

from app.ml.data import Dataset, Task, classify_dataset, pairs_dataset, text_dataset
from app.ml.hyperparameters import ONE_HOT_ARCHITECTURES, Hyperparameters, text_defaults
from app.ml.vocab import MAX_LABEL_LENGTH, Label, Vocab
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
    labels: int = 0  # distinct labels (labels datasets)


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


class LabeledPair(TypedDict):
    """One sequence and its class label (a dict for the reason ``Pair`` is one)."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    input: Annotated[str, Field(min_length=1, examples=["Nakamura"])]
    label: Label


class LabelsData(BaseModel):
    """Sequences and their labels, for a classifier (task classify)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pairs: list[LabeledPair] = Field(
        min_length=1,
        description=f"Each label 1 to {MAX_LABEL_LENGTH} characters, no control characters; "
        "the labels are the sorted distinct labels unless vocab.labels gives them.",
    )


class TextData(BaseModel):
    """Plain text for next-character modelling (enables ``/generate``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=2)


def _data_kind(value: Any) -> str | None:
    source = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    if "pairs" in source:
        return "labels" if _labeled(source["pairs"]) else "pairs"
    return "text" if "text" in source else None


def _labeled(pairs: Any) -> bool:
    """Pairs with a label, not a target (the first pair decides; mixing is refused)."""
    return (
        isinstance(pairs, list)
        and bool(pairs)
        and isinstance(pairs[0], dict)
        and ("label" in pairs[0] and "target" not in pairs[0])
    )


def _mixed_pairs(pairs: Any) -> str | None:
    """Why ``pairs`` mixes targets and labels, or None when it does not."""
    if not isinstance(pairs, list):
        return None
    first = {
        key: next((i for i, p in enumerate(pairs) if isinstance(p, dict) and key in p), None)
        for key in ("target", "label")
    }
    if first["target"] is None or first["label"] is None:
        return None
    return (
        f"data.pairs[{first['target']}] has a 'target' (aligned pairs) and "
        f"data.pairs[{first['label']}] a 'label' (classification); one job trains one task: "
        "give every pair a target, or every pair a label"
    )


TrainingData = Annotated[
    Annotated[PairsData, Tag("pairs")]
    | Annotated[LabelsData, Tag("labels")]
    | Annotated[TextData, Tag("text")],
    Discriminator(
        _data_kind,
        custom_error_type="data_kind",
        custom_error_message="data needs either 'pairs' (aligned pairs with a target, or "
        "sequences with a label) or 'text' (plain text)",
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
# a classifier encodes its input into one state to classify: no one-hot variant does that
CLASSIFIER_IS_AN_ENCODER: dict[str, Any] = {
    "if": {
        "properties": {
            "data": {
                "properties": {"pairs": {"items": {"required": ["label"]}}},
                "required": ["pairs"],
            }
        },
        "required": ["data"],
    },
    "then": {
        "properties": {
            "hyperparameters": {"properties": {"architecture": {"const": "embedding_rnn"}}}
        }
    },
}
# _vocab_fits_the_data: labels for labeled pairs, output characters for the others
LABELS_ARE_A_LIST: dict[str, Any] = {
    "properties": {"labels": {"type": "array"}},
    "required": ["labels"],
}
VOCAB_FITS_THE_DATA: dict[str, Any] = {
    "if": CLASSIFIER_IS_AN_ENCODER["if"],
    "then": {"properties": {"vocab": {"anyOf": [{"type": "null"}, LABELS_ARE_A_LIST]}}},
    "else": {"properties": {"vocab": {"anyOf": [{"type": "null"}, {"not": LABELS_ARE_A_LIST}]}}},
}
TRAINING_RULES: list[JsonValue] = [
    TEXT_IS_NOT_BIDIRECTIONAL,
    CLASSIFIER_IS_AN_ENCODER,
    VOCAB_FITS_THE_DATA,
    DATA_OR_DATASET,
]
DEVICE_PATTERN = r"^(auto|cpu|cuda(:(0|[1-9][0-9]?))?)$"


class JobSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"allOf": TRAINING_RULES},
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
        None,
        description="Input and output vocabularies (for labeled pairs: input and labels); "
        "inferred from the data when absent.",
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
    def _one_kind_of_pairs(cls, value: Any) -> Any:
        data = value.get("data") if isinstance(value, dict) else None
        problem = _mixed_pairs(data.get("pairs")) if isinstance(data, dict) else None
        if problem is not None:
            raise ValueError(problem)
        return value

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

    @model_validator(mode="after")
    def _classifier_is_an_encoder(self) -> Self:
        architecture = self.hyperparameters.architecture
        if self.is_labeled and architecture in ONE_HOT_ARCHITECTURES:
            raise ValueError(
                f"hyperparameters.architecture {architecture!r} cannot classify: its hidden "
                "state is a per-character output; use 'embedding_rnn' for labeled pairs"
            )
        return self

    @model_validator(mode="after")
    def _vocab_fits_the_data(self) -> Self:
        labeled = self.is_labeled
        if self.vocab is None or labeled is None:  # a dataset's kind: judged once looked up
            return self
        if labeled and self.vocab.labels is None:
            raise ValueError("vocab: labeled pairs need vocab.labels, not vocab.output")
        if not labeled and self.vocab.labels is not None:
            raise ValueError(
                "vocab: vocab.labels is for labeled pairs; pairs with targets and text "
                "need vocab.output"
            )
        return self

    @property
    def is_text(self) -> bool:
        """Next-character modelling: inline text, or a text dataset (once looked up)."""
        facts = self.dataset_facts
        return isinstance(self.data, TextData) or (facts is not None and facts.kind == "text")

    @property
    def is_labeled(self) -> bool | None:
        """Sequences with labels (classify): inline, or a labels dataset; None while the
        dataset has not been looked up."""
        if self.data is not None:
            return isinstance(self.data, LabelsData)
        facts = self.dataset_facts
        return None if facts is None else facts.kind == "labels"

    @property
    def dataset_facts(self) -> DatasetFacts | None:
        return self._dataset_facts

    @property
    def characters(self) -> int:
        if isinstance(self.data, TextData):
            return len(self.data.text)
        if isinstance(self.data, PairsData | LabelsData):
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


def task_of(data: TrainingData) -> Task:
    """The task that data of this kind trains."""
    if isinstance(data, TextData):
        return "text"
    return "classify" if isinstance(data, LabelsData) else "pairs"


def encode_data(data: TrainingData, seq_len: int, vocab: Vocab | None) -> Dataset:
    """``data`` encoded as training encodes it (text in ``seq_len`` windows), in ``vocab``
    or the one inferred from it; raises the engine's DataError / UnknownCharactersError."""
    if isinstance(data, TextData):
        return text_dataset(data.text, seq_len, vocab)
    if isinstance(data, LabelsData):
        return classify_dataset([(p["input"], p["label"]) for p in data.pairs], vocab)
    return pairs_dataset([(p["input"], p["target"]) for p in data.pairs], vocab)


def build_dataset(spec: JobSpec, store_dir: Path | None = None) -> Dataset:
    """Encode the job's data, or load its dataset from the store under ``store_dir``;
    raises the engine's DataError / UnknownCharactersError."""
    if spec.dataset is not None:
        if store_dir is None:
            raise ValueError("a job on a stored dataset needs the store's directory")
        _, dataset = load_dataset(store_dir, spec.dataset, spec.hyperparameters.seq_len, spec.vocab)
        return dataset
    assert spec.data is not None  # _data_or_dataset
    return encode_data(spec.data, spec.hyperparameters.seq_len, spec.vocab)
