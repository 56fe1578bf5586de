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
from typing import Any, Literal, Self

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
from app.ml.data import Examples, split
from app.ml.errors import CheckpointError, ConfigurationError
from app.ml.evaluate import SCORERS, Score, evaluate, rows_per_batch
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Predictor
from app.serving.cache import ModelCache
from app.settings import Settings
from app.store.registry import Registry
from app.store.tables import VersionRow

Split = Literal["validation"]


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
            ],
            "oneOf": [{"required": ["data"]}, {"required": ["split"]}],
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
        "from its job's data, seed and validation_fraction (a version trained on inline "
        "data with validation_fraction > 0).",
    )

    @field_validator("data", "split", mode="before")
    @classmethod
    def _absent_not_null(cls, value: Any) -> Any:
        """Left out, never null: defaults are not validated, so only a null sent is refused."""
        if value is None:
            raise ValueError("may be left out but not null")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.data is None) == (self.split is None):
            raise ValueError("give exactly one of data (examples to score) or split (held out)")
        return self


@dataclass(frozen=True)
class Evaluation:
    model_name: str
    version: int
    source: Literal["data", "validation"]
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
        training = None
        if request.split is not None:
            training = self.training_spec(row)
            self.check_characters("split", held_out_characters(training.data, hp))
        predictor = self.cache.get(model_name, row.directory)
        started = time.perf_counter()
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
            source="data" if request.data is not None else "validation",
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

    # --- the request, as examples ----------------------------------------------------------

    @staticmethod
    def examples_to_score(
        request: EvaluateRequest,
        training: JobSpec | None,
        version: int,
        hp: Hyperparameters,
        predictor: Predictor,
    ) -> Examples:
        """The one place a request becomes examples: its inline data, or the held-out
        split of ``training``, the request that trained the version (a stored dataset's
        split joins here, as one more branch)."""
        if predictor.task not in SCORERS:
            raise ConfigurationError(f"versions of task {predictor.task!r} cannot be evaluated")
        if request.data is not None:
            return encode(request.data, predictor, hp, "data")
        if training is None or hp.seed is None:
            raise ConflictError(
                f"version {version} does not record the data and seed that split its "
                "examples: its held-out split cannot be rebuilt; send data instead"
            )
        examples = encode(training.data, predictor, hp, "split")
        _, held_out = split(examples, hp.validation_fraction, hp.seed)
        if held_out is None:
            raise ConflictError(
                f"version {version} was trained on all its data (validation_fraction "
                f"{hp.validation_fraction} held out no example): it has no held-out split; "
                "send data instead"
            )
        return held_out

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


# what to send a version of each task
WANTED = {
    "text": "data.text",
    "pairs": "data.pairs with a target each",
    "classify": "data.pairs with a label each",
}


def encode(data: TrainingData, predictor: Predictor, hp: Hyperparameters, field: str) -> Examples:
    """``data`` in the version's vocabulary, as its training encoded them."""
    if task_of(data) != predictor.task:
        wanted = WANTED.get(predictor.task, "data")
        raise InvalidRequestError(
            field, f"the version was trained on {predictor.task} data: send {wanted}"
        )
    return encode_data(data, hp.seq_len, predictor.vocab).examples
