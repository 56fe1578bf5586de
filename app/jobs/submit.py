"""Accepting a job: everything is checked before anything is queued."""

from __future__ import annotations

from pydantic import ValidationError

from app.errors import InvalidRequestError, LimitExceededError
from app.jobs.runner import JobRunner
from app.jobs.spec import DatasetFacts, JobSpec, LabelsData, PairsData, build_dataset
from app.ml.model import ModelConfig, estimate_parameters
from app.ml.train import estimate_seconds
from app.settings import Settings
from app.store.layout import new_id
from app.store.registry import Registry
from app.store.tables import JobRow

HYPERPARAMETER_LIMITS = {
    # hyperparameter: the setting that bounds it
    "hidden_size": "max_hidden_size",
    "num_layers": "max_num_layers",
    "embedding_size": "max_embedding_size",
    "epochs": "max_epochs",
    "seq_len": "max_seq_len",
    "batch_size": "max_batch_size",
}


def check_hyperparameters(spec: JobSpec, config: ModelConfig, settings: Settings) -> int:
    """Refuse what passes the service's limits; the model's parameter count otherwise."""
    hp = spec.hyperparameters
    for name, setting in HYPERPARAMETER_LIMITS.items():
        value, limit = getattr(hp, name), getattr(settings, setting)
        if value is not None and value > limit:  # null: not used by the architecture
            raise LimitExceededError(
                f"hyperparameters.{name}",
                f"{value}, at most {limit} allowed",
                f"CHARNN_{setting.upper()}",
            )
    check_budgets(spec, settings)
    parameters = estimate_parameters(config)
    if hp.max_seconds is not None:
        return parameters  # its time is its budget: bounded more tightly than any cost
    characters = spec.characters * hp.epochs
    what = f"{spec.characters} characters x {hp.epochs} epochs"
    per_step = hp.batch_size * hp.seq_len  # a text window is seq_len characters at most
    if spec.is_text and hp.max_steps is not None and hp.max_steps * per_step < characters:
        characters = hp.max_steps * per_step
        what = f"{hp.max_steps} steps x {hp.batch_size} windows x {hp.seq_len} characters"
    cost = parameters * characters
    if cost > settings.max_training_cost:
        raise LimitExceededError(
            "hyperparameters",
            f"{parameters} parameters x {what} = {cost:.3g}, at most "
            f"{settings.max_training_cost:.3g} allowed; fewer epochs, or a budget "
            "(max_steps, max_seconds), bound it",
            "CHARNN_MAX_TRAINING_COST",
        )
    return parameters


def with_dataset(spec: JobSpec, settings: Settings, registry: Registry) -> JobSpec:
    """The job again, knowing its dataset: text defaults from the dataset's characters,
    and its kind and size for the checks that follow. Jobs on inline data as they are."""
    if spec.dataset is None:
        return spec
    row = registry.find_dataset(spec.dataset)
    if row is None:
        raise InvalidRequestError(
            "dataset", f"no dataset {spec.dataset}; upload one with POST /datasets"
        )
    limits = {name: getattr(settings, setting) for name, setting in HYPERPARAMETER_LIMITS.items()}
    facts = DatasetFacts(row.kind, row.characters, row.examples, row.longest, row.labels)
    context = {"dataset": facts, "hyperparameter_limits": limits}
    # what the client gave (the defaults it left out are the dataset's to fill)
    given = spec.model_dump(mode="json", exclude_unset=True)
    try:
        return JobSpec.model_validate(given, context=context)
    except ValidationError as exc:  # a rule that needs the dataset's kind (no 500)
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        problem = error["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(
            "dataset", f"a {row.kind} dataset; {where + ': ' if where else ''}{problem}"
        ) from None


def check_budgets(spec: JobSpec, settings: Settings) -> None:
    """A time budget the service would cut short, and checkpoints too frequent to write."""
    hp = spec.hyperparameters
    if hp.max_seconds is not None and hp.max_seconds > settings.job_timeout_seconds:
        raise LimitExceededError(
            "hyperparameters.max_seconds",
            f"{hp.max_seconds:g}, at most {settings.job_timeout_seconds} allowed (a job "
            "running longer fails)",
            "CHARNN_JOB_TIMEOUT_SECONDS",
        )
    every, least = hp.checkpoint_every_steps, settings.min_checkpoint_every_steps
    if every is not None and every < least:
        raise LimitExceededError(
            "hyperparameters.checkpoint_every_steps",
            f"{every}, at least {least} allowed (each report writes a checkpoint)",
            "CHARNN_MIN_CHECKPOINT_EVERY_STEPS",
        )


def check_validation_data(spec: JobSpec, examples: int) -> None:
    """Early stopping and the plateau schedule judge by held-out examples: some must be."""
    hp = spec.hyperparameters
    judged = hp.early_stopping_patience is not None or hp.lr_schedule == "plateau"
    if judged and int(hp.validation_fraction * examples) == 0:  # as app.ml.data.split rounds
        raise InvalidRequestError(
            "hyperparameters.validation_fraction",
            f"{hp.validation_fraction:g} of {examples} examples holds none out, and "
            "early_stopping_patience or lr_schedule 'plateau' judge by the validation loss: "
            "raise validation_fraction or give more data",
        )


def check_limits(spec: JobSpec, settings: Settings) -> None:
    if isinstance(spec.data, PairsData | LabelsData) and (
        len(spec.data.pairs) > settings.max_training_pairs
    ):
        raise LimitExceededError(
            "data.pairs",
            f"{len(spec.data.pairs)} pairs, at most {settings.max_training_pairs} allowed",
            "CHARNN_MAX_TRAINING_PAIRS",
        )
    facts = spec.dataset_facts
    if facts is not None and facts.kind == "text":
        return  # memory-mapped by the worker: bounded by CHARNN_MAX_DATASET_BYTES at upload
    if facts is not None:  # rows, read whole and padded, as inline pairs are
        check_rows(facts, settings)
        check_labels(facts.labels, "dataset", settings)
    if spec.characters > settings.max_training_chars:
        raise LimitExceededError(
            "data",
            f"{spec.characters} characters, at most {settings.max_training_chars} allowed",
            "CHARNN_MAX_TRAINING_CHARS",
        )
    if isinstance(spec.data, PairsData | LabelsData):
        check_padded_pairs(spec.data, settings)
    if isinstance(spec.data, LabelsData):
        check_labels(len({pair["label"] for pair in spec.data.pairs}), "data.pairs", settings)


def check_labels(labels: int, field: str, settings: Settings) -> None:
    """A classifier's head grows with its labels: bounded before anything is encoded."""
    if labels > settings.max_training_labels:
        raise LimitExceededError(
            field,
            f"{labels} distinct labels, at most {settings.max_training_labels} allowed",
            "CHARNN_MAX_TRAINING_LABELS",
        )


def check_rows(facts: DatasetFacts, settings: Settings) -> None:
    if facts.examples > settings.max_training_pairs:
        raise LimitExceededError(
            "dataset",
            f"{facts.examples} rows, at most {settings.max_training_pairs} allowed",
            "CHARNN_MAX_TRAINING_PAIRS",
        )
    padded = facts.examples * facts.longest
    if padded > settings.max_training_chars:
        raise LimitExceededError(
            "dataset",
            f"{facts.examples} rows padded to the longest ({facts.longest} characters) make "
            f"{padded} characters, at most {settings.max_training_chars} allowed",
            "CHARNN_MAX_TRAINING_CHARS",
        )


def check_padded_pairs(data: PairsData | LabelsData, settings: Settings) -> None:
    """Pairs are encoded padded to the longest: one long pair among many short ones would
    make the encoded data (built here, in the API) far larger than the data itself."""
    longest = max(len(pair["input"]) for pair in data.pairs)
    padded = len(data.pairs) * longest
    if padded > settings.max_training_chars:
        raise LimitExceededError(
            "data.pairs",
            f"{len(data.pairs)} pairs padded to the longest ({longest} characters) make "
            f"{padded} characters, at most {settings.max_training_chars} allowed",
            "CHARNN_MAX_TRAINING_CHARS",
        )


def submit_job(spec: JobSpec, settings: Settings, registry: Registry, runner: JobRunner) -> JobRow:
    """Validate the data against its vocabulary and queue the job."""
    spec = with_dataset(spec, settings, registry)
    check_limits(spec, settings)
    # unknown characters, misaligned pairs, a vocabulary short of the dataset's: refused now
    dataset = build_dataset(spec, settings.store_dir)
    check_validation_data(spec, len(dataset.examples))
    config = ModelConfig.from_hyperparameters(spec.hyperparameters, dataset.vocab)
    parameters = check_hyperparameters(spec, config, settings)
    device = spec.device or settings.device
    runner.check_device(device)  # a GPU job that nothing can run is refused now, not later
    job = registry.create_job(
        job_id=new_id(),
        model_name=spec.model_name,
        request=spec.model_dump(mode="json"),
        device=device,
        epochs=spec.hyperparameters.epochs,
        max_attempts=settings.job_max_attempts,
        max_queued=settings.max_queued_jobs,  # counted and enforced in one transaction
        dataset_id=spec.dataset,
        estimated_seconds=estimate_seconds(
            # a worker elsewhere (rq) has threads of its own; these are this machine's
            spec.hyperparameters,
            config,
            parameters,
            dataset.examples,
            settings.training_threads,
        ),
    )
    runner.notify()
    return job
