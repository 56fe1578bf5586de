"""Evaluate: score a stored version on inline data or on its own held-out split.

    POST /models/{name}/versions/{n}/evaluate  {"data": {"text": ...}} | {"split": "validation"}

The request becomes examples in one place, ``examples_to_score``; the scoring itself is
the engine's (``app.ml.evaluate``). The held-out split is rebuilt as training built it:
the job's stored data, encoded with the version's vocabulary into its ``seq_len``
windows, split with its ``seed`` and ``validation_fraction`` (``app.ml.data.split``),
so that its score is the ``val_loss`` the last epoch recorded.

Everything here runs in a worker thread (the route hands it over), and the characters
it will score are counted, and refused past ``max_evaluate_characters``, before the
model is loaded or a character encoded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.errors import ConflictError, InvalidRequestError, LimitExceededError, NotFoundError
from app.jobs.spec import JobSpec, TextData, TrainingData, encode_data, task_of
from app.ml.data import ExampleSet, split
from app.ml.errors import CheckpointError, ConfigurationError, DataError
from app.ml.evaluate import SCORERS, Score, evaluate, rows_per_batch
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Predictor
from app.serving.cache import ModelCache
from app.settings import Settings
from app.store.dataset_reader import load_dataset
from app.store.datasets import DATASET_ID_PATTERN
from app.store.registry import Registry
from app.store.tables import DatasetRow, VersionRow

Split = Literal["validation"]
DatasetId = Annotated[str, Field(pattern=DATASET_ID_PATTERN)]


def no_default(schema: dict[str, Any]) -> None:
    """A field that is absent, never null: the schema shows no null default."""
    schema.pop("default", None)


class EvaluateRequest(BaseModel):
    """What to score: inline ``data``, or the version's own held-out ``split``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"data": {"pairs": [{"input": "hello", "target": "ohlol"}]}},
                {"split": "validation"},
                {"dataset": "0123456789abcdef0123456789abcdef", "split": "validation"},
            ],
            # inline data alone, or a split and/or a stored dataset
            "oneOf": [
                {"required": ["data"]},
                {"anyOf": [{"required": ["split"]}, {"required": ["dataset"]}]},
            ],
        },
    )

    # absent, never null, in the schema: its oneOf tells the two sources apart
    data: TrainingData | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra=no_default,
        description="Examples to score, as POST /train takes them: pairs for a version "
        "trained on pairs, text for one trained on text (scored in its seq_len windows).",
    )
    split: Split | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra=no_default,
        description="validation: the examples the version's training held out, rebuilt "
        "from its job's data (or the dataset given), seed and validation_fraction (a "
        "version trained here with validation_fraction > 0).",
    )
    dataset: DatasetId | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra=no_default,
        description="An uploaded dataset (POST /datasets) to score, whole, or with split its "
        "part that the version's seed and validation_fraction hold out.",
    )

    @field_validator("data", "split", "dataset", mode="before")
    @classmethod
    def _absent_not_null(cls, value: Any) -> Any:
        """Left out, never null: defaults are not validated, so only a null sent is refused."""
        if value is None:
            raise ValueError("may be left out but not null")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        stored = self.split is not None or self.dataset is not None
        if (self.data is not None) != stored:
            return self
        raise ValueError(
            "give either data (examples to score), or split (held out) and/or dataset "
            "(an uploaded one)"
        )


@dataclass(frozen=True)
class Evaluation:
    model_name: str
    version: int
    source: Literal["data", "validation", "dataset"]
    dataset: str | None  # the uploaded dataset scored
    seq_len: int | None  # text: the windows' length; pairs: none
    score: Score
    seconds: float


class Evaluator:
    def __init__(self, settings: Settings, registry: Registry, cache: ModelCache) -> None:
        self.settings = settings
        self.registry = registry
        self.cache = cache

    def evaluate(self, model_name: str, version: int, request: EvaluateRequest) -> Evaluation:
        """Blocking: run it in a worker thread."""
        if request.data is not None:
            self.check_characters("data", characters_of(request.data))  # before any work
        row = self.registry.get_version(model_name, version)
        hp = Hyperparameters.model_validate(row.hyperparameters)
        training = self.training_spec(row) if request.split is not None else None
        dataset = request.dataset or (training.dataset if training is not None else None)
        if dataset is not None:
            self.check_dataset(dataset, request.split is not None, hp, given=request.dataset)
        elif training is not None:
            assert training.data is not None  # a job has data or a dataset
            self.check_characters("split", held_out_characters(training.data, hp))
        predictor = self.cache.get(model_name, row.directory)
        started = time.perf_counter()
        if dataset is not None:
            examples = self.dataset_examples(dataset, request.split, row.version, hp, predictor)
        else:
            examples = self.examples_to_score(request, training, row.version, hp, predictor)
        score = evaluate(
            predictor.model,
            predictor.task,
            predictor.config.architecture,
            examples,
            batch_size=rows_per_batch(examples),
            device=predictor.device,
        )
        if not math.isfinite(score.totals.nll):
            raise CheckpointError(
                "the model's outputs are not finite numbers: its weights hold NaN or "
                "infinity; train it again or import a sound checkpoint"
            )
        return Evaluation(
            model_name=model_name,
            version=row.version,
            source="data" if request.data else "validation" if request.split else "dataset",
            dataset=dataset,
            seq_len=hp.seq_len if predictor.task == "text" else None,
            score=score,
            seconds=time.perf_counter() - started,
        )

    def check_characters(self, field: str, characters: int) -> None:
        limit = self.settings.max_evaluate_characters
        if characters > limit:
            raise LimitExceededError(
                field,
                f"{characters} characters to score, at most {limit} allowed; score a "
                "smaller sample",
                "CHARNN_MAX_EVALUATE_CHARACTERS",
            )

    def check_dataset(
        self, dataset: str, held_out: bool, hp: Hyperparameters, given: str | None
    ) -> None:
        """The uploaded dataset exists, and what of it would be scored is within the limit."""
        row = self.registry.find_dataset(dataset)
        if row is None and given is None:
            raise ConflictError(
                f"the dataset {dataset} that trained this version is gone: it has no held-out "
                "split any more; send data or another dataset instead"
            )
        if row is None:
            raise InvalidRequestError(
                "dataset", f"no dataset {dataset}; upload one with POST /datasets"
            )
        characters = dataset_characters(row)
        if held_out:
            characters = held_out_of(row, hp)
        self.check_characters("split" if held_out else "dataset", characters)

    def dataset_examples(
        self,
        dataset: str,
        held_out: Split | None,
        version: int,
        hp: Hyperparameters,
        predictor: Predictor,
    ) -> ExampleSet:
        """An uploaded dataset in the version's vocabulary and windows, whole or its held-out
        part (read from the store's memory map, as a worker reads it)."""
        kind = self.registry.get_dataset(dataset).kind
        if DATASET_TASKS[kind] != predictor.task:  # before its rows meet the wrong vocabulary
            wanted = next((k for k, t in DATASET_TASKS.items() if t == predictor.task), "other")
            raise InvalidRequestError(
                "dataset",
                f"a {kind} dataset; the version was trained on {predictor.task} data: give "
                f"a {wanted} dataset",
            )
        try:
            _, loaded = load_dataset(self.settings.store_dir, dataset, hp.seq_len, predictor.vocab)
        except DataError as exc:
            raise InvalidRequestError("dataset", exc.message) from None
        if held_out is None:
            return loaded.examples
        return held_out_split(loaded.examples, version, hp)

    # --- the request, as examples ----------------------------------------------------------

    @staticmethod
    def examples_to_score(
        request: EvaluateRequest,
        training: JobSpec | None,
        version: int,
        hp: Hyperparameters,
        predictor: Predictor,
    ) -> ExampleSet:
        """The one place a request becomes examples: its inline data, or the held-out
        split of ``training``, the request that trained the version (a stored dataset's
        split joins here, as one more branch)."""
        if predictor.task not in SCORERS:
            raise ConfigurationError(f"versions of task {predictor.task!r} cannot be evaluated")
        if request.data is not None:
            return encode(request.data, predictor, hp, "data")
        if training is None:
            raise ConflictError(
                f"version {version} does not record the data and seed that split its "
                "examples: its held-out split cannot be rebuilt; send data instead"
            )
        assert training.data is not None  # a job on a dataset is scored by dataset_examples
        return held_out_split(encode(training.data, predictor, hp, "split"), version, hp)

    def training_spec(self, row: VersionRow) -> JobSpec:
        """The request of the job that trained ``row``: its data, as the worker read them."""
        if row.job_id is None:
            raise ConflictError(
                f"version {row.version} was imported, not trained here: no training data "
                "is stored with it, so it has no held-out split; send data instead"
            )
        try:
            job = self.registry.get_job(row.job_id)
        except NotFoundError:
            raise ConflictError(
                f"the job {row.job_id} that trained version {row.version} is gone, and its "
                "data with it: it has no held-out split any more; send data instead"
            ) from None
        try:
            return JobSpec.model_validate(job.request)
        except ValidationError:
            raise ConflictError(
                f"the stored data of job {row.job_id}, which trained version {row.version}, "
                "can no longer be read; send data instead"
            ) from None


def characters_of(data: TrainingData) -> int:
    """Characters that scoring ``data`` runs through the model (pairs padded to the longest)."""
    if isinstance(data, TextData):
        return len(data.text)
    return len(data.pairs) * max(len(pair["input"]) for pair in data.pairs)


def held_out_characters(data: TrainingData, hp: Hyperparameters) -> int:
    """At most the characters of the held-out split (``split`` holds out floor(f * N)),
    counted from the data's size alone, before anything is encoded."""
    if isinstance(data, TextData):
        windows = math.ceil((len(data.text) - 1) / hp.seq_len)
        return int(hp.validation_fraction * windows) * hp.seq_len
    longest = max(len(pair["input"]) for pair in data.pairs)
    return int(hp.validation_fraction * len(data.pairs)) * longest


# the task a version trained on a dataset of each kind has
DATASET_TASKS = {"text": "text", "pairs": "pairs", "labels": "classify"}
# what to send a version of each task
WANTED = {
    "text": "data.text",
    "pairs": "data.pairs with a target each",
    "classify": "data.pairs with a label each",
}


def encode(data: TrainingData, predictor: Predictor, hp: Hyperparameters, field: str) -> ExampleSet:
    """``data`` in the version's vocabulary, as its training encoded them."""
    if task_of(data) != predictor.task:
        wanted = WANTED.get(predictor.task, "data")
        raise InvalidRequestError(
            field, f"the version was trained on {predictor.task} data: send {wanted}"
        )
    return encode_data(data, hp.seq_len, predictor.vocab).examples


def held_out_split(examples: ExampleSet, version: int, hp: Hyperparameters) -> ExampleSet:
    """The examples that training held out: ``split`` with the version's seed and fraction."""
    if hp.seed is None:
        raise ConflictError(
            f"version {version} does not record the seed that split its examples: its "
            "held-out split cannot be rebuilt; send data instead"
        )
    _, held_out = split(examples, hp.validation_fraction, hp.seed)
    if held_out is None:
        raise ConflictError(
            f"version {version} was trained on all its data (validation_fraction "
            f"{hp.validation_fraction} held out no example): it has no held-out split; "
            "send data instead"
        )
    return held_out


def dataset_characters(row: DatasetRow) -> int:
    """Characters that scoring an uploaded dataset runs through the model (rows padded)."""
    return row.characters if row.kind == "text" else row.examples * row.longest


def held_out_of(row: DatasetRow, hp: Hyperparameters) -> int:
    """At most the characters of an uploaded dataset's held-out part, from its size alone."""
    if row.kind == "text":
        windows = math.ceil((row.characters - 1) / hp.seq_len)
        return int(hp.validation_fraction * windows) * hp.seq_len
    return int(hp.validation_fraction * row.examples) * row.longest
