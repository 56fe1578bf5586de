"""Requests and responses of the public API, named by direction (``...Request``, ``...Public``).

The engine's own pydantic models (``Vocab``, ``Hyperparameters``, ``EpochMetrics``) and
the job specification are reused as they are, so the API, the checkpoints and the
engine share one definition of each.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from pydantic_core import to_json

from app.jobs.spec import TRAINING_RULES, JobSpec, ModelName
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import LabelScores, Prediction
from app.ml.jsontypes import JsonBool, JsonFloat, JsonInt, OptionalSeed, integral
from app.ml.metrics import EpochMetrics, StepProgress, StopReason
from app.ml.model import ModelConfig
from app.ml.vocab import Vocab
from app.serving.evaluation import Evaluation
from app.store.registry import RecentEpoch
from app.store.tables import EpochRow, JobRow, JobStatus, ModelRow, VersionRow, utcnow

VERSION_MAX = 2**31 - 1  # the registry keeps version numbers in a 32-bit integer column
OptionalVersion = Annotated[StrictInt, Field(ge=1, le=VERSION_MAX), integral] | None

HELLO_TRAIN_EXAMPLE: dict[str, Any] = {
    "model_name": "hello",
    "data": {"pairs": [{"input": "hello", "target": "ohlol"}]},
    "hyperparameters": {
        "architecture": "embedding_rnn",
        "embedding_size": 10,
        "hidden_size": 8,
        "num_layers": 2,
        "learning_rate": 0.05,
        "epochs": 15,
        "seed": 0,
    },
}


class TrainRequest(JobSpec):
    """Train a new version of ``model_name``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [HELLO_TRAIN_EXAMPLE], "allOf": TRAINING_RULES}
    )


# --- jobs ---------------------------------------------------------------------------------


class EpochPublic(EpochMetrics):
    # an epoch recorded before NaN was refused (SQLite kept it) is still served, as null
    model_config = ConfigDict(allow_inf_nan=True)

    attempt: int = Field(description="Which attempt of the job trained this epoch (1-based).")
    recorded_at: datetime = Field(
        description="When the epoch was recorded, after its checkpoint was written: the "
        "time between two epochs' recorded_at is what an epoch costs the job in all."
    )


class JobPublic(BaseModel):
    id: str
    model_name: str
    status: JobStatus
    epoch: int = Field(description="Epochs completed.")
    epochs: int
    progress: float = Field(
        ge=0, le=1, description="Share of the epochs done, the current one's batches included."
    )
    step_progress: StepProgress | None = Field(
        None,
        description="Where a running job stands within its epoch: steps, epoch fraction, "
        "recent loss (and bits per character for text), learning rate, characters per "
        "second; reported every checkpoint_every_steps steps or CHARNN_PROGRESS_SECONDS "
        "seconds, null between an epoch's end and the next report.",
    )
    attempts: int = Field(description="Times a worker started the job (resumes included).")
    failures: int = Field(description="Attempts that failed; the job fails at max_attempts.")
    cancel_requested: bool
    error: str | None
    version: int | None = Field(description="The model version the job created.")
    dataset: str | None = Field(
        None, description="The uploaded dataset it trains on; null for inline data."
    )
    hyperparameters: Hyperparameters
    history: list[EpochPublic] | None = Field(
        None,
        description="Every epoch's metrics, with ?history=true (otherwise null): "
        "GET /jobs/{job_id}/epochs reads them a page at a time.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    estimated_seconds: float | None = Field(
        description="How long the job was estimated to take when it was submitted, from "
        "its parameters x characters x epochs, its batches' time steps and a cost around "
        "each epoch, calibrated on a small x86 CPU for the job's torch threads: an "
        "estimate, within a factor of about two there when it is not busy (null for jobs "
        "submitted before estimates)."
    )
    eta_seconds: float | None = Field(
        description="Estimated seconds left while it runs: the epochs left times the "
        "wall-clock time between its latest epochs' recorded_at (checkpoint and registry "
        "writes and validation included); within its first epoch, that epoch's training "
        "time so far over the share of it done."
    )


class JobList(BaseModel):
    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class EpochPage(BaseModel):
    items: list[EpochPublic]
    after: int = Field(description="The epochs are those numbered above this one.")
    limit: int
    next_after: int | None = Field(
        description="``after`` of the next page; null when this page is the last so far."
    )


# --- models -------------------------------------------------------------------------------


class ValidationScores(BaseModel):
    """A version's held-out scores, as training measured them at its best epoch."""

    loss: float = Field(description="Mean loss in nats (per character for text).")
    bits_per_char: float | None = Field(description="loss / ln 2 (text only).")
    char_accuracy: float | None
    seq_accuracy: float | None


class VersionPublic(BaseModel):
    model_name: str
    version: int
    task: str = Field(
        description="pairs (transduction), text (next character) or classify (a label "
        "per sequence)."
    )
    config: ModelConfig
    hyperparameters: Hyperparameters
    vocab: Vocab
    metrics: EpochMetrics | None = Field(description="The last epoch's metrics.")
    epochs: int
    best_epoch: int | None = Field(
        None,
        description="The epoch whose weights the version holds: the lowest validation loss, "
        "or the last without validation data (null for versions from before it was kept).",
    )
    stop_reason: StopReason | None = Field(
        None,
        description="Why training stopped: completed (its epochs), max_steps, max_seconds "
        "or early_stopping (null for versions from before it was recorded).",
    )
    validation: ValidationScores | None = Field(
        None,
        description="The validation scores recorded at training time at the best epoch; "
        "null without validation data.",
    )
    parameters: int
    size_bytes: int
    sha256: str = Field(description="sha256 of the weights file.")
    job_id: str | None
    created_at: datetime


class ModelSummary(BaseModel):
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int


class ModelPublic(BaseModel):
    name: str
    created_at: datetime
    versions: list[VersionPublic]


# --- predict and generate -----------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model_name": "hello", "inputs": ["hello"]}]},
    )

    model_name: ModelName
    version: OptionalVersion = Field(None, description="Default: the latest version.")
    inputs: list[str] = Field(min_length=1, description="Sequences to map, one output each.")
    return_probabilities: JsonBool = Field(
        False,
        description="Also return the probability of each chosen character (a classifier "
        "always returns its label's).",
    )
    top_k: JsonInt = Field(
        0,
        ge=0,
        le=64,
        description="Also return the k likeliest characters (a classifier: the k likeliest "
        "labels, at most as many as it has).",
    )


class CharProbabilityPublic(BaseModel):
    character: str
    probability: float


class PredictionDetail(BaseModel):
    probabilities: list[float] | None = None
    top_k: list[list[CharProbabilityPublic]] | None = None


class LabelProbabilityPublic(BaseModel):
    label: str
    probability: float


class LabelPredictionPublic(BaseModel):
    """A classifier's answer for one input."""

    label: str = Field(description="The likeliest label.")
    probability: float = Field(ge=0, le=1, description="Its probability.")
    top_k: list[LabelProbabilityPublic] = Field(
        description="The top_k likeliest labels, likeliest first (empty when top_k is 0)."
    )


class PredictResponse(BaseModel):
    model_name: str
    version: int
    outputs: list[str] = Field(description="Per input: its output string, or its label.")
    details: list[PredictionDetail] | None = Field(
        None,
        description="Per input, when probabilities or top_k were asked for (null for a "
        "classifier, which answers in labels).",
    )
    # absent for the other models, whose answers read as before classifiers existed
    labels: list[LabelPredictionPublic] | None = Field(
        None,
        description="A classifier's answer per input; absent for the other models.",
        exclude_if=lambda value: value is None,
    )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"model_name": "fox", "prompt": "the quick", "length": 40}]
        },
    )

    model_name: ModelName
    version: OptionalVersion = Field(None, description="Default: the latest version.")
    prompt: str = Field(min_length=1)
    length: JsonInt = Field(100, ge=1, description="Characters to add to the prompt.")
    temperature: JsonFloat = Field(1.0, ge=0.0, le=10.0, description="0: always the likeliest.")
    seed: OptionalSeed = None


class GenerateResponse(BaseModel):
    model_name: str
    version: int
    text: str


# --- evaluate -----------------------------------------------------------------------------


class EvaluationPublic(BaseModel):
    """How well a version did on the examples scored; each mean says what it averages over."""

    model_name: str
    version: int
    task: str = Field(description="pairs (transduction) or text (next character).")
    source: Literal["data", "validation", "dataset"] = Field(
        description="data: the request's examples; validation: the version's held-out split "
        "(of its training data, or of the dataset given); dataset: a whole uploaded dataset."
    )
    dataset: str | None = Field(description="The uploaded dataset scored, if one was.")
    seq_len: int | None = Field(
        description="text: the length of the windows scored (the version's seq_len, each "
        "window's first character predicted from a fresh state, as in training); pairs: null."
    )
    nll: float = Field(
        ge=0,
        description="Mean negative log-likelihood of the target characters, in nats per "
        "character scored (padding never counts).",
    )
    bits_per_character: float = Field(ge=0, description="nll / ln 2.")
    char_accuracy: float = Field(
        ge=0, le=1, description="Characters whose likeliest prediction is the target."
    )
    seq_accuracy: float | None = Field(
        ge=0,
        le=1,
        description="pairs: sequences predicted whole, every character right; classify: "
        "sequences given their label; text: null.",
    )
    characters: int = Field(
        ge=0, description="Positions scored: characters (classify: one label per sequence)."
    )
    sequences: int = Field(ge=0, description="Sequences scored: pairs, or text windows.")
    loss: float = Field(
        ge=0,
        description="The training loss on these examples, comparable with the val_loss "
        "recorded in training: nll, except for rnn_cell, whose loss is the NLL summed over "
        "each sequence and averaged over sequences (see loss_per).",
    )
    loss_per: Literal["characters", "sequences"] = Field(
        description="What loss averages over: characters, or sequences (rnn_cell)."
    )
    seconds: float = Field(ge=0, description="Time spent encoding and scoring.")


def evaluation_public(evaluation: Evaluation) -> EvaluationPublic:
    score = evaluation.score
    return EvaluationPublic(
        model_name=evaluation.model_name,
        version=evaluation.version,
        task=score.task,
        source=evaluation.source,
        dataset=evaluation.dataset,
        seq_len=evaluation.seq_len,
        nll=score.nll,
        bits_per_character=score.bits_per_character,
        char_accuracy=score.char_accuracy,
        seq_accuracy=score.seq_accuracy if score.task != "text" else None,
        characters=score.totals.targets,
        sequences=score.totals.sequences,
        loss=score.loss,
        loss_per=score.loss_per,
        seconds=evaluation.seconds,
    )


# --- operations ---------------------------------------------------------------------------


class ErrorMessage(BaseModel):
    """Every refusal but a validation error: what was wrong, and how to fix it."""

    detail: str


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


# --- building responses from registry rows --------------------------------------------------


def epoch_public(row: EpochRow) -> EpochPublic:
    return EpochPublic(attempt=row.attempt, recorded_at=row.created_at, **row.metrics)


def seconds_per_epoch(recent: list[RecentEpoch]) -> float | None:
    """What an epoch costs the job, from its latest epochs (newest first).

    The wall-clock time between consecutive epochs of one attempt holds all of it:
    training, validation, the sample prediction, the checkpoint and the registry's
    writes; an epoch's own ``seconds`` count the training steps only, about half of it
    for a small model. Those serve only until two epochs of one attempt are recorded
    (the gap across a restart is the time the job waited, not what an epoch costs).
    """
    gaps = [
        (newer.recorded_at - older.recorded_at).total_seconds()
        for newer, older in pairwise(recent)
        if newer.attempt == older.attempt
    ]
    if gaps:
        return sum(gaps) / len(gaps)
    if recent:
        return sum(epoch.seconds for epoch in recent) / len(recent)
    return None


def job_public(
    job: JobRow,
    hyperparameters: dict[str, Any],
    history: list[EpochRow] | None = None,
    recent: list[RecentEpoch] | None = None,
) -> JobPublic:
    """The job; its ``history`` when given, its ETA from its ``recent`` epochs."""
    elapsed = eta = None
    if job.started_at is not None:
        end = job.finished_at or utcnow()
        elapsed = (end - job.started_at).total_seconds()
    step = StepProgress.model_validate(job.progress) if job.progress else None
    if step is not None and step.epoch <= job.epoch:
        step = None  # told of an epoch that has ended since
    fraction = step.epoch_fraction if step is not None else 0.0
    per_epoch = seconds_per_epoch(recent or [])
    if per_epoch is None and step is not None and step.seconds and fraction:
        per_epoch = step.seconds / fraction  # the first epoch, by the share of it done
    if job.status == JobStatus.RUNNING and per_epoch is not None:
        eta = per_epoch * (job.epochs - job.epoch - fraction)
    elif job.status == JobStatus.RUNNING and job.estimated_seconds is not None:
        eta = max(job.estimated_seconds - (elapsed or 0.0), 0.0)  # no epoch to go by yet
    return JobPublic(
        id=job.id,
        model_name=job.model_name,
        status=JobStatus(job.status),
        epoch=job.epoch,
        epochs=job.epochs,
        progress=min((job.epoch + fraction) / job.epochs, 1.0),
        step_progress=step,
        attempts=job.attempts,
        failures=job.failures,
        cancel_requested=job.cancel_requested,
        error=job.error,
        version=job.version,
        dataset=job.dataset_id,
        hyperparameters=Hyperparameters.model_validate(hyperparameters),
        history=None if history is None else [epoch_public(row) for row in history],
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        elapsed_seconds=elapsed,
        estimated_seconds=job.estimated_seconds,
        eta_seconds=eta,
    )


def version_public(model_name: str, row: VersionRow) -> VersionPublic:
    return VersionPublic(
        model_name=model_name,
        version=row.version,
        task=row.task,
        config=ModelConfig.model_validate(row.config),
        hyperparameters=Hyperparameters.model_validate(row.hyperparameters),
        vocab=Vocab.model_validate(row.vocab),
        metrics=EpochMetrics.model_validate(row.metrics) if row.metrics else None,
        epochs=row.epochs,
        best_epoch=row.best_epoch,
        stop_reason=cast(StopReason | None, row.stop_reason),
        validation=ValidationScores.model_validate(row.validation) if row.validation else None,
        parameters=row.parameters,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        job_id=row.job_id,
        created_at=row.created_at,
    )


def model_summary(model: ModelRow) -> ModelSummary:
    return ModelSummary(
        name=model.name,
        created_at=model.created_at,
        latest_version=model.versions[-1].version if model.versions else None,
        version_count=len(model.versions),
    )


def model_public(model: ModelRow) -> ModelPublic:
    return ModelPublic(
        name=model.name,
        created_at=model.created_at,
        versions=[version_public(model.name, v) for v in model.versions],
    )


def json(value: Any) -> bytes:
    return to_json(value, inf_nan_mode="null")  # as pydantic's models write NaN: null


def predict_response_json(
    request: PredictRequest, version: int, predictions: list[Prediction]
) -> bytes:
    """A ``PredictResponse`` as JSON, built without re-validation (the engine typed it all).

    Written a position at a time, from plain lists: a large answer as one serializer
    call would hold the GIL (and the event loop's thread) for as long as it runs, and
    as a model object per value it would cost the collector whole passes.
    """
    head = json(
        {
            "model_name": request.model_name,
            "version": version,
            "outputs": [p.output for p in predictions],
        }
    )[:-1]
    if predictions and predictions[0].label is not None:  # a classifier's: all or none
        labels = ",".join(label_json(p.label) for p in predictions if p.label is not None)
        return head + b',"details":null,"labels":[' + labels.encode() + b"]}"
    if not (request.top_k or request.return_probabilities):
        return head + b',"details":null}'
    details = ",".join(detail_json(p) for p in predictions)
    return head + b',"details":[' + details.encode() + b"]}"


def label_json(scores: LabelScores) -> str:
    """One ``LabelPredictionPublic``."""
    top = [
        {"label": label, "probability": probability}
        for label, probability in zip(scores.top_labels, scores.top_probabilities, strict=True)
    ]
    answer = {"label": scores.label, "probability": scores.probability, "top_k": top}
    return json(answer).decode()


def numbers(values: list[float]) -> list[str]:
    """``[0.5, 1e-05]`` -> ``["0.5", "1e-5"]``, as JSON writes each."""
    return json(values).decode()[1:-1].split(",") if values else []


TOP_K_ENTRY = '{"character":%s,"probability":%s}'


def detail_json(prediction: Prediction) -> str:
    """One ``PredictionDetail``; its numbers are finite (the engine refuses others)."""
    probabilities = "null"
    if prediction.probabilities is not None:
        probabilities = json(prediction.probabilities).decode()
    top_k = "null"
    if prediction.top_k is not None:
        top = prediction.top_k
        quoted = {c: json(c).decode() for c in {c for cs in top.characters for c in cs}}
        entry, quote = TOP_K_ENTRY.__mod__, quoted.__getitem__
        # a position at a time, each written by C-level map and join (the numbers by
        # the JSON serializer): fast, and the interpreter may switch threads in between
        positions = (
            "[" + ",".join(map(entry, zip(map(quote, cs), numbers(ps), strict=True))) + "]"
            for cs, ps in zip(top.characters, top.probabilities, strict=True)
        )
        top_k = "[" + ",".join(positions) + "]"
    return f'{{"probabilities":{probabilities},"top_k":{top_k}}}'


class DatasetPublic(BaseModel):
    """An uploaded dataset; train on it with ``POST /train {"dataset": id}``."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(
        description="Derived from kind, format and sha256: the same upload, the same id."
    )
    name: str | None = Field(description="The name given at upload, if any.")
    kind: str = Field(description="text, pairs (input,target) or labels (input,label).")
    format: str = Field(description="How the file was read: text, csv, tsv or jsonl.")
    sha256: str = Field(description="Of the uploaded file.")
    size_bytes: int = Field(description="Of the uploaded file.")
    characters: int = Field(description="Characters of text, or of the rows' inputs.")
    examples: int = Field(description="Rows of pairs or labels; 0 for text.")
    vocab_size: int = Field(description="Distinct characters (of the inputs, for rows).")
    labels: int = Field(description="Distinct labels (labels datasets); 0 otherwise.")
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int
