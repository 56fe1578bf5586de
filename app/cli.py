"""The ``charnn`` command."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from app.client import Client, ClientError, ServerUnavailable
from app.datafiles import DataFileError, read_training_data
from app.ml.hyperparameters import Architecture, Cell, Hyperparameters, LrSchedule, OptimizerName

if TYPE_CHECKING:
    from app.settings import Settings

out = Console()
err = Console(stderr=True)


def complain(label: str, message: str, style: str = "red") -> None:
    """A message on stderr: its label styled, the message (often the server's, or a path)
    as plain text, never read as rich markup, whatever brackets it holds."""
    # wrapped at word boundaries on a terminal; piped, one line, ids and paths in one piece
    err.print(Text.assemble((label, style), " ", message), soft_wrap=not err.is_terminal)


cli = typer.Typer(
    name="charnn",
    help="Train and serve character-level recurrent networks.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion and --show-completion, for bash, zsh, fish...
)


def show_version(asked: bool) -> None:
    if asked:
        try:
            typer.echo(f"charnn {package_version('charnn')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("charnn (not installed)")
        raise typer.Exit()


@cli.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train and serve character-level recurrent networks."""


# The tutorial's three models with the settings it gives them.
TUTORIAL_SETTINGS: dict[str, dict[str, float | int]] = {
    "rnn_cell": {"learning_rate": 0.1},
    "rnn": {"learning_rate": 0.1, "num_layers": 1},
    "embedding_rnn": {
        "learning_rate": 0.05,
        "embedding_size": 10,
        "hidden_size": 8,
        "num_layers": 2,
    },
}


@cli.command()
def tutorial(
    architecture: Annotated[
        Architecture, typer.Option(help="Which of the tutorial's models.")
    ] = "rnn_cell",
    cell: Annotated[Cell, typer.Option(help="Recurrent cell.")] = "rnn",
    source: Annotated[str, typer.Option(help="Input sequence.")] = "hello",
    target: Annotated[str, typer.Option(help="Output sequence, same length.")] = "ohlol",
    epochs: Annotated[int, typer.Option(min=1, max=10_000)] = 15,
    seed: Annotated[
        int, typer.Option(min=0, help="Runs vary with the seed, as in the tutorial.")
    ] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Train the tutorial's "hello" -> "ohlol" in-process and print its per-epoch line."""
    from app.ml.data import pairs_dataset
    from app.ml.device import resolve_device
    from app.ml.errors import CharnnError
    from app.ml.hyperparameters import Hyperparameters
    from app.ml.metrics import EpochMetrics
    from app.ml.train import TrainingSession, train
    from app.ml.vocab import Vocab, chars_of

    def report(_session: TrainingSession, m: EpochMetrics) -> None:
        typer.echo(
            f"Predicted string: {m.sample_prediction}, Epoch [{m.epoch}/{epochs}] loss={m.loss:.4f}"
        )

    try:
        hp = Hyperparameters(
            architecture=architecture,
            cell=cell,
            epochs=epochs,
            seed=seed,
            validation_fraction=0.0,
            **TUTORIAL_SETTINGS[architecture],
        )
        # one shared vocabulary for inputs and outputs, like the tutorial's idx2char
        idx2char = chars_of([source, target])
        dataset = pairs_dataset([(source, target)], Vocab(input=idx2char, output=idx2char))
        session = TrainingSession.start(hp, dataset, resolve_device(device))
        train(session, on_epoch_end=report)
    except CharnnError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


EXIT_BAD_SETTING = 2  # as a bad command-line option: fix the configuration


def settings_or_exit() -> Settings:
    """The settings; if the environment's are unusable, one line on stderr and exit 2."""
    from app.settings import InvalidSettings, load_settings

    try:
        return load_settings()
    except InvalidSettings as exc:
        # plain text: rich would wrap a long line and read brackets in it as markup
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_SETTING) from None


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Run the HTTP service on its embedded defaults (SQLite registry, local job runner)."""
    import uvicorn

    from app.api.auth import LOCAL_ONLY, is_loopback
    from app.api.guard import LOOPBACK_NAMES
    from app.http_protocol import bounded_protocol
    from app.logs import logging_config

    settings = settings_or_exit()
    if not settings.key_scopes and not settings.allow_unauthenticated and not is_loopback(host):
        complain(f"refusing to listen on {host}:", LOCAL_ONLY)
        raise typer.Exit(EXIT_REFUSED)
    if not is_loopback(host) and settings.host_names <= LOOPBACK_NAMES:
        complain(
            "note:",
            f"listening on {host}, but CHARNN_ALLOWED_HOSTS names only loopback: requests "
            "by any other name or address get 400; add the names clients use",
            style="yellow",
        )

    uvicorn.run(
        "app.main:app",
        host=host,
        port=port,
        # uvicorn's own lines (start-up, access) in charnn's format: JSON with the request id
        log_config=logging_config(settings.log_level, settings.log_format == "json", uvicorn=True),
        log_level=log_level,
        access_log=access_log,
        limit_concurrency=settings.max_connections,  # idle connections cost memory too
        http=bounded_protocol(settings.max_header_bytes),
    )


@cli.command()
def worker(
    queue: Annotated[
        Literal["cpu", "gpu"], typer.Option(help="Consume the CPU or the GPU job queue.")
    ] = "cpu",
    burst: Annotated[bool, typer.Option(help="Exit once the queue is empty.")] = False,
) -> None:
    """Run a training worker for the rq backend (CHARNN_REDIS_URL, CHARNN_DATABASE_URL)."""
    import torch

    from app.jobs.queue import run_worker
    from app.logs import configure_logging
    from app.startup import DependencyUnavailable, wait_for_dependencies

    settings = settings_or_exit()
    # rq adds a handler of its own only where none is set: its lines are charnn's too
    configure_logging(settings.log_level, settings.log_format == "json")
    torch.set_num_threads(settings.training_threads)
    # As a container's first process, SIGTERM without a handler is ignored: `docker stop`
    # would wait out its grace period while this waits for its dependencies. RQ installs
    # its own (finish the current job) once it runs.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        wait_for_dependencies(settings, redis=True)  # they may start after the worker
    except DependencyUnavailable as exc:
        complain("error:", str(exc))
        raise typer.Exit(1) from exc
    run_worker(settings, queue, burst=burst)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@cli.command()
def check(
    url: Annotated[str | None, typer.Option(help="An HTTP URL that must answer 200.")] = None,
    redis: Annotated[bool, typer.Option("--redis", help="Ping CHARNN_REDIS_URL.")] = False,
    database: Annotated[
        bool, typer.Option("--database", help="Query CHARNN_DATABASE_URL.")
    ] = False,
) -> None:
    """Health check for containers: exit 0 when everything asked for answers."""
    from app.settings import get_settings

    settings = get_settings()
    try:
        if url is not None:
            import httpx

            httpx.get(url, timeout=4).raise_for_status()
        # app.startup, not app.jobs.queue: a health check must not load torch
        from app.startup import ping_database, ping_redis

        if redis:
            ping_redis(settings.redis_url)
        if database:
            ping_database(settings.registry_url)
    except Exception as exc:
        typer.echo(f"unhealthy: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("ok")


store = typer.Typer(help="Look after the model store (run where its files are).")
cli.add_typer(store, name="store", no_args_is_help=True)


@store.command("check")
def store_check(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Fix what is found: delete versions whose files are missing or fail "
            "verification, remove orphans, unfinished writes, stale job checkpoints "
            "and foreign files.",
        ),
    ] = False,
    min_age: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds: younger orphans and unfinished writes may belong to a running "
            "service or worker, so they are only listed. 0 once nothing runs on the store.",
        ),
    ] = 600.0,  # app.store.check.LEFTOVER_MIN_AGE_SECONDS (not imported here: torch is slow)
) -> None:
    """Check that the registry and the files agree (CHARNN_STORE_DIR, CHARNN_DATABASE_URL).

    Exit 0 when the store is clean (or repaired), 1 while problems remain, 2 when
    there is no registry to check against.
    """
    from app.settings import get_settings
    from app.store.check import (
        StoreCheckError,
        check_store,
        finding_line,
        open_registry,
        repair_store,
    )
    from app.store.check import summary as store_summary
    from app.store.layout import StoreLayout

    settings = get_settings()
    layout = StoreLayout(settings.store_dir)
    try:
        registry = open_registry(settings.registry_url)
    except StoreCheckError as exc:
        complain("error:", str(exc))
        raise typer.Exit(2) from exc
    try:
        report = check_store(registry, layout, min_age=min_age)
        repaired = repair_store(registry, layout, report) if repair and report.problems else []
        for line in store_summary(report, repaired):
            typer.echo(line)
        if repaired:
            report = check_store(registry, layout, min_age=min_age)
    finally:
        registry.close()
    if report.problems:
        if repaired:
            typer.echo("still:")
            for finding in report.problems:
                typer.echo(finding_line(report, finding))
        typer.echo(f"{len(report.problems)} problem(s) remain", err=True)
        if not repair:
            typer.echo("run `charnn store check --repair` to fix them", err=True)
        raise typer.Exit(1)
    typer.echo("the store is clean" + (" (repaired)" if repaired else ""))


# --- the client: talks to a running server (CHARNN_URL, CHARNN_API_KEY) ----------------------
#
# What it prints is for people on a terminal and for scripts alike: data (ids, outputs,
# JSON) goes to stdout through `emit`, as is, never wrapped at the console's width nor read
# as rich markup; messages go to stderr, server and user strings in them as plain Text.

EXIT_REFUSED = 2  # the server said no (4xx): fix the request
EXIT_UNAVAILABLE = 3  # no server, or it failed (5xx)
EXIT_JOB_FAILED = 1  # the job ended failed or cancelled
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it

UrlOption = Annotated[str, typer.Option("--url", envvar="CHARNN_URL", help="The charnn server.")]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="CHARNN_API_KEY", help="Bearer API key.")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the server's JSON as it answered, nothing else.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print ids only.")]
ONE_JOB = "A job id, or a unique start of one."
FULL_ID_LENGTH = 32  # app.store.layout.new_id: uuid4 hex
SHORT_ID_LENGTH = 8  # what a table on a terminal shows; any unique start is accepted back


def emit(line: object) -> None:
    typer.echo(str(line))


def emit_json(data: Any) -> None:
    emit(json.dumps(data, ensure_ascii=False))


@contextmanager
def connected(url: str, api_key: str | None) -> Iterator[Client]:
    """A client whose errors become readable messages and exit codes that scripts can use."""
    client = Client(url, api_key)
    try:
        yield client
    except ClientError as exc:
        complain(f"refused ({exc.status}):", str(exc))
        raise typer.Exit(EXIT_REFUSED) from exc
    except ServerUnavailable as exc:
        complain("server unavailable:", str(exc))
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    finally:
        client.close()


def resolve_job(client: Client, given: str) -> str:
    """The full id of the one job whose id starts with ``given`` (exit 2 for none or several)."""
    if len(given) >= FULL_ID_LENGTH:
        return given
    matches: list[str] = []
    offset, total = 0, 1
    while offset < total:
        page = client.jobs(limit=500, offset=offset)
        matches += [job["id"] for job in page["items"] if job["id"].startswith(given)]
        offset, total = offset + len(page["items"]), page["total"]
        if not page["items"]:
            break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        complain("no job:", f"no job id starts with {given!r}")
    else:
        complain("ambiguous:", f"{given!r} starts {len(matches)} job ids: " + ", ".join(matches))
    raise typer.Exit(EXIT_REFUSED)


# One option per field of app.ml.hyperparameters.Hyperparameters, its help the field's own
# description; tests/test_cli.py checks that none is missing. None: the server's default.
HP_HELP = {name: field.description or "" for name, field in Hyperparameters.model_fields.items()}
HP_HELP |= {  # shorter than the API's words, for 80 columns
    "architecture": "rnn_cell, rnn (the tutorial's one-hot models) or embedding_rnn "
    "(Embedding -> recurrent layers -> Linear).",
    "grad_clip": "Clip the gradient norm to this value (default: off).",
    "seed": "Random seed: a fixed one makes a CPU run reproducible (default: drawn at random).",
    "max_steps": "Stop after this many optimizer steps, if before the epochs end.",
    "max_seconds": "Stop after this many seconds of training, if before the epochs end.",
    "lr_schedule": "constant, cosine (warm-up, then down to --min-learning-rate) or "
    "plateau (times --plateau-factor when validation stalls).",
    "early_stopping_patience": "Stop after this many epochs without a better validation "
    "loss; the version keeps the best epoch (default: off).",
    "checkpoint_every_steps": "Report and checkpoint every this many steps within an epoch.",
}
HP = "Hyperparameters (default: the server's)"


def hp_option(name: str, *flags: str, **kwargs: Any) -> Any:
    return typer.Option(
        *flags, help=HP_HELP[name], rich_help_panel=HP, show_default=False, **kwargs
    )


@cli.command("train")
def train_command(
    model_name: Annotated[str, typer.Argument(help="Model to train a new version of.")],
    data_file: Annotated[
        Path | None,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV, TSV, JSONL pairs (target or label) or text; or --dataset.",
        ),
    ] = None,
    text: Annotated[bool, typer.Option("--text", help="Treat the file as plain text.")] = False,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Train on an uploaded dataset (its id) instead of a file."),
    ] = None,
    architecture: Annotated[Architecture | None, hp_option("architecture", metavar="ARCH")] = None,
    cell: Annotated[Cell | None, hp_option("cell")] = None,
    embedding_size: Annotated[int | None, hp_option("embedding_size")] = None,
    hidden_size: Annotated[int | None, hp_option("hidden_size")] = None,
    num_layers: Annotated[int | None, hp_option("num_layers")] = None,
    bidirectional: Annotated[bool, hp_option("bidirectional", "--bidirectional")] = False,
    dropout: Annotated[float | None, hp_option("dropout")] = None,
    optimizer: Annotated[OptimizerName | None, hp_option("optimizer")] = None,
    learning_rate: Annotated[float | None, hp_option("learning_rate")] = None,
    weight_decay: Annotated[float | None, hp_option("weight_decay")] = None,
    momentum: Annotated[float | None, hp_option("momentum")] = None,
    epochs: Annotated[int | None, hp_option("epochs")] = None,
    batch_size: Annotated[int | None, hp_option("batch_size")] = None,
    grad_clip: Annotated[float | None, hp_option("grad_clip")] = None,
    seq_len: Annotated[int | None, hp_option("seq_len")] = None,
    validation_fraction: Annotated[float | None, hp_option("validation_fraction")] = None,
    seed: Annotated[int | None, hp_option("seed")] = None,
    max_steps: Annotated[int | None, hp_option("max_steps")] = None,
    max_seconds: Annotated[float | None, hp_option("max_seconds")] = None,
    lr_schedule: Annotated[LrSchedule | None, hp_option("lr_schedule")] = None,
    warmup_steps: Annotated[int | None, hp_option("warmup_steps")] = None,
    min_learning_rate: Annotated[float | None, hp_option("min_learning_rate")] = None,
    plateau_factor: Annotated[float | None, hp_option("plateau_factor")] = None,
    plateau_patience: Annotated[int | None, hp_option("plateau_patience")] = None,
    early_stopping_patience: Annotated[int | None, hp_option("early_stopping_patience")] = None,
    min_delta: Annotated[float | None, hp_option("min_delta")] = None,
    checkpoint_every_steps: Annotated[int | None, hp_option("checkpoint_every_steps")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress until the job ends.")
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Start a training job from a data file or an uploaded dataset; --follow shows it
    learn, epoch by epoch."""
    source = training_source(data_file, dataset, text=text)
    given = {
        "architecture": architecture,
        "cell": cell,
        "embedding_size": embedding_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "bidirectional": bidirectional or None,  # a plain flag: given or the default
        "dropout": dropout,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "momentum": momentum,
        "epochs": epochs,
        "batch_size": batch_size,
        "grad_clip": grad_clip,
        "seq_len": seq_len,
        "validation_fraction": validation_fraction,
        "seed": seed,
        "max_steps": max_steps,
        "max_seconds": max_seconds,
        "lr_schedule": lr_schedule,
        "warmup_steps": warmup_steps,
        "min_learning_rate": min_learning_rate,
        "plateau_factor": plateau_factor,
        "plateau_patience": plateau_patience,
        "early_stopping_patience": early_stopping_patience,
        "min_delta": min_delta,
        "checkpoint_every_steps": checkpoint_every_steps,
    }
    hyperparameters = {k: v for k, v in given.items() if v is not None}
    spec = {"model_name": model_name, **source, "hyperparameters": hyperparameters}
    with connected(url, api_key) as client:
        job = client.train(spec)
        if as_json:
            emit_json(job)
        elif quiet:
            emit(job["id"])
        else:
            emit(f"job {job['id']} queued")
        if follow:
            watch(client, job, as_json=as_json, quiet=quiet)


def training_source(data_file: Path | None, dataset: str | None, *, text: bool) -> dict[str, Any]:
    """``{"data": ...}`` read from the file, or ``{"dataset": id}``: exactly one."""
    if (data_file is None) == (dataset is None):
        complain("error:", "give a data file or --dataset ID, one of them")
        raise typer.Exit(EXIT_REFUSED)
    if dataset is not None:
        return {"dataset": dataset}
    assert data_file is not None
    try:
        return {"data": read_training_data(data_file, text=text)}
    except (DataFileError, UnicodeDecodeError) as exc:
        complain("error:", str(exc))
        raise typer.Exit(EXIT_REFUSED) from exc


@cli.command("follow")
def follow_command(
    job_id: Annotated[str, typer.Argument(help=ONE_JOB)],
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Show a job's progress until it ends (exit 0 when it succeeds, 1 otherwise)."""
    with connected(url, api_key) as client:
        job = client.job(resolve_job(client, job_id))
        watch(client, job, as_json=as_json, quiet=quiet)


def watch(client: Client, job: dict[str, Any], *, as_json: bool, quiet: bool) -> None:
    """Follow ``job`` to its end, shown as asked; exit 1 unless it succeeds.

    On a terminal, a progress bar; piped, one plain line per epoch; --json, each event's
    data as one JSON line; -q, nothing. Ctrl-C stops following, not the job.
    """
    try:
        if as_json:
            job = follow_as_json(client, job)
        elif quiet:
            job = follow_quietly(client, job)
        elif out.is_terminal:
            job = follow_with_bar(client, job)
        else:
            job = follow_as_lines(client, job)
    except KeyboardInterrupt:
        complain(
            "stopped following:",
            f"job {job['id']} keeps running on the server; `charnn cancel {job['id']}` cancels it",
            style="yellow",
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if job["status"] != "succeeded":
        if not (as_json or quiet):
            complain(f"job {job['status']}:", job.get("error") or "")
        raise typer.Exit(EXIT_JOB_FAILED)
    if not (as_json or quiet):
        emit(f"{job['model_name']} version {job['version']} is ready")


JOB_EVENTS = ("job", "end")  # the others (epoch, progress) carry metrics, not the job


def follow_as_json(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    for event, data in client.follow(job["id"]):
        emit_json(data)
        if event in JOB_EVENTS:
            job = data
    return job


def follow_quietly(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    for event, data in client.follow(job["id"]):
        if event in JOB_EVENTS:
            job = data
    return job


def follow_as_lines(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    """One line per epoch, for logs: ``hello 3/15 loss 1.2345  acc 40%  ... eta 0:00:02``."""
    for event, data in client.follow(job["id"]):
        if event == "epoch":
            count = f"{data['epoch']}/{job['epochs']}"
            eta = seconds_as_clock(data["seconds"] * (job["epochs"] - data["epoch"]))
            emit(f"{job['model_name']} {count} {epoch_line(data)} eta {eta}")
        elif event == "progress":
            count = f"{data['epoch'] - 1 + data['epoch_fraction']:.2f}/{job['epochs']}"
            emit(f"{job['model_name']} {count} {progress_line(data)}")
        elif event in JOB_EVENTS:
            job = data
    return job


def seconds_as_clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


# Fixed widths of the bar's columns, so that at 80 columns the sample prediction is what
# gets cut, never the bar, the epoch count or the time remaining.
NAME_WIDTH = 16
BAR_WIDTH = 20
ETA_WIDTH = 7  # "0:00:00"


def follow_with_bar(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    """A progress bar with loss, accuracy and the sample prediction of each epoch."""
    count_width = 2 * len(str(job["epochs"])) + 1
    name_width = min(len(job["model_name"]), NAME_WIDTH)
    room = out.width - name_width - BAR_WIDTH - count_width - ETA_WIDTH - 4  # 4 gaps of 1
    fixed = {"no_wrap": True, "overflow": "ellipsis"}
    columns = (
        TextColumn(
            "{task.description}",
            style="bold",
            markup=False,
            table_column=Column(max_width=NAME_WIDTH, **fixed),  # type: ignore[arg-type]
        ),
        BarColumn(bar_width=BAR_WIDTH),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn(
            "{task.fields[detail]}",
            markup=False,
            table_column=Column(max_width=max(room, 1), **fixed),  # type: ignore[arg-type]
        ),
    )
    with Progress(*columns, console=out) as progress:
        bar = progress.add_task(job["model_name"], total=job["epochs"], detail=job["status"])
        for event, data in client.follow(job["id"]):
            if event == "epoch":
                progress.update(bar, completed=data["epoch"], detail=epoch_line(data))
                continue
            if event == "progress":  # within a long epoch: the bar moves by its fraction
                done = data["epoch"] - 1 + data["epoch_fraction"]
                progress.update(bar, completed=done, detail=progress_line(data))
                continue
            if event not in JOB_EVENTS:
                continue
            job = data  # its status changed, or it ended
            if not job["epoch"]:
                progress.update(bar, detail=job["status"])
    return job


def progress_line(progress: dict[str, Any]) -> str:
    """``step 1200  loss 1.2345  bpc 1.781  5,210 chars/s``: where a long epoch stands."""
    bpc = progress.get("bits_per_char")
    return (
        f"step {progress['step']}  loss {progress['loss']:.4f}  "
        + (f"bpc {bpc:.3f}  " if bpc is not None else "")
        + f"{progress['chars_per_second']:,.0f} chars/s"
    )


def epoch_line(epoch: dict[str, Any]) -> str:
    return (
        f"loss {epoch['loss']:.4f}  acc {epoch['train_char_accuracy']:.0%}  "
        f"{epoch['sample_input']!r} -> {epoch['sample_prediction']!r}"
    )


@cli.command()
def predict(
    model_name: str,
    inputs: Annotated[list[str], typer.Argument(help="Sequences to map.")],
    version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None,
    top_k: Annotated[
        int, typer.Option(help="Also show the k likeliest characters (or labels).")
    ] = 0,
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Map each input to its output, one line each (a classifier's: label and probability)."""
    with connected(url, api_key) as client:
        answer = client.predict(model_name, inputs, version=version, top_k=top_k or None)
    if as_json or (top_k and "labels" not in answer):  # no plainer form than the JSON
        emit_json(answer)
        return
    for line in predict_lines(answer):
        emit(line)


def predict_lines(answer: dict[str, Any]) -> list[str]:
    """One line per input: its output; for a classifier ``label<TAB>probability``, then
    its top k as ``label=probability`` pairs."""
    if "labels" not in answer:
        return list(answer["outputs"])
    lines = []
    for scores in answer["labels"]:
        line = f"{scores['label']}\t{scores['probability']:.4f}"
        top = "  ".join(f"{t['label']}={t['probability']:.4f}" for t in scores["top_k"])
        lines.append(f"{line}\t{top}" if top else line)
    return lines


def model_and_version(given: str) -> tuple[str, int | None]:
    """``MODEL`` or ``MODEL:VERSION`` -> (model, version or None for the latest)."""
    name, colon, version = given.partition(":")
    if not colon:
        return name, None
    if not version.isdigit() or int(version) < 1:
        complain("error:", f"{given!r}: the version after ':' must be a number from 1")
        raise typer.Exit(EXIT_REFUSED)
    return name, int(version)


def evaluation_source(
    text: Path | None, data: Path | None, split: str | None, dataset: str | None
) -> dict[str, Any]:
    """The body of an evaluate request: a file, or a split and/or an uploaded dataset."""
    files = [text, data].count(None)
    if files == 0 or (files == 1 and (split or dataset)) or (files == 2 and not (split or dataset)):
        complain(
            "error:",
            "give one of --text FILE, --data FILE or --split validation (with --dataset ID, "
            "or --dataset ID alone)",
        )
        raise typer.Exit(EXIT_REFUSED)
    if dataset is not None:
        return {"dataset": dataset, **({"split": split} if split else {})}
    try:
        if text is not None:
            return {"data": read_training_data(text, text=True)}
        if data is not None:
            return {"data": read_training_data(data)}
    except (DataFileError, UnicodeDecodeError) as exc:
        complain("error:", str(exc))
        raise typer.Exit(EXIT_REFUSED) from exc
    return {"split": split}


@cli.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="MODEL or MODEL:VERSION (default: the latest).")],
    text: Annotated[
        Path | None, typer.Option("--text", help="Score this plain-text file.", exists=True)
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Score this data file (CSV, TSV, JSONL pairs or text).", exists=True
        ),
    ] = None,
    split: Annotated[
        Literal["validation"] | None,
        typer.Option("--split", help="Score the version's own held-out split."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", help="Score an uploaded dataset (its held-out part with --split)."
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Score a version: NLL, bits per character and accuracy on a file or its held-out split."""
    name, version = model_and_version(model)
    body = evaluation_source(text, data, split, dataset)
    with connected(url, api_key) as client:
        if version is None:
            versions = [v["version"] for v in client.model(name)["versions"]]
            if not versions:
                complain("error:", f"model {name!r} has no versions yet")
                raise typer.Exit(EXIT_REFUSED)
            version = max(versions)
        answer = client.evaluate(name, version, body)
    if as_json:
        emit_json(answer)
        return
    emit(
        f"{name} version {answer['version']} on {answer['source']}: "
        f"{answer['characters']} characters in {answer['sequences']} sequences"
    )
    emit(f"nll {answer['nll']:.4f} nats/char  {answer['bits_per_character']:.4f} bits/char")
    accuracy = f"character accuracy {answer['char_accuracy']:.2%}"
    if answer["seq_accuracy"] is not None:
        accuracy += f"  sequence accuracy {answer['seq_accuracy']:.2%}"
    emit(accuracy)


@cli.command()
def generate(
    model_name: str,
    prompt: str,
    length: Annotated[int, typer.Option(min=1)] = 100,
    temperature: Annotated[float, typer.Option(min=0.0)] = 1.0,
    seed: Annotated[int | None, typer.Option()] = None,
    version: Annotated[int | None, typer.Option()] = None,
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Continue a prompt with a text model."""
    with connected(url, api_key) as client:
        answer = client.generate(
            model_name,
            prompt,
            length=length,
            temperature=temperature,
            seed=seed,
            version=version,
        )
    emit_json(answer) if as_json else emit(answer["text"])


@cli.command()
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show one job in full. " + ONE_JOB)] = None,
    history: Annotated[bool, typer.Option(help="With one job: every epoch's metrics too.")] = False,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """List jobs (newest first), or show one (as JSON)."""
    with connected(url, api_key) as client:
        if job_id is not None:
            job = client.job(resolve_job(client, job_id), history=history)
            emit(job["id"]) if quiet else emit_json(job)
            return
        page = client.jobs(status=status, model_name=model, limit=limit)
    if as_json:
        emit_json(page)
        return
    rows = [
        (
            job["id"],
            job["model_name"],
            job["status"],
            f"{job['epoch']}/{job['epochs']}",
            str(job["version"] or ""),
            minute(job["created_at"]),
        )
        for job in page["items"]
    ]
    show_rows(("id", "model", "status", "epoch", "version", "created"), rows, quiet=quiet)
    if not quiet:
        err.print(f"{len(page['items'])} of {page['total']}")


def minute(timestamp: str) -> str:
    """``2026-12-02 08:00`` of an ISO timestamp: enough to tell rows apart, and short."""
    return timestamp[:16].replace("T", " ")


def show_rows(header: Sequence[str], rows: Sequence[Sequence[str]], *, quiet: bool) -> None:
    """A table on a terminal (ids shortened: any unique start is accepted back); piped,
    tab-separated lines with every value in full; -q, the first column alone."""
    if quiet:
        for row in rows:
            emit(row[0])
    elif out.is_terminal:
        table = Table(*header, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
        for row in rows:
            short = row[0][:SHORT_ID_LENGTH] if header[0] == "id" else row[0]
            table.add_row(*(Text(cell) for cell in (short, *row[1:])))
        out.print(table)
    else:
        for row in (header, *rows):
            emit("\t".join(row))


@cli.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help=ONE_JOB)],
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Cancel a job (a running one stops within one epoch)."""
    with connected(url, api_key) as client:
        job = client.cancel(resolve_job(client, job_id))
    if as_json:
        emit_json(job)
    elif quiet:
        emit(job["id"])
    else:
        emit(f"job {job['id']}: {job['status']}")


@cli.command()
def models(
    name: Annotated[str | None, typer.Argument(help="Show one model's versions.")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """List models, or one model's versions (-q: names, or version numbers)."""
    with connected(url, api_key) as client:
        answer: Any = client.models() if name is None else client.model(name)
    if as_json:
        emit_json(answer)
    elif name is None:
        rows: list[tuple[str, ...]] = [
            (
                model["name"],
                str(model["latest_version"] or ""),
                str(model["version_count"]),
                minute(model["created_at"]),
            )
            for model in answer
        ]
        show_rows(("model", "latest version", "versions", "created"), rows, quiet=quiet)
    else:
        rows = [
            (
                str(v["version"]),
                v["task"],
                f"{v['config']['architecture']}/{v['config']['cell']}",
                str(v["epochs"]),
                f"{(v['metrics'] or {}).get('loss', float('nan')):.4f}",
                f"{(v['metrics'] or {}).get('train_char_accuracy', 0):.0%}",
                str(v.get("best_epoch") or ""),
                v.get("stop_reason") or "",
                validation_cell(v.get("validation")),
                minute(v["created_at"]),
            )
            for v in answer["versions"]
        ]
        header = (
            "version", "task", "architecture", "epochs", "loss", "accuracy",
            "best", "stopped", "validation", "created",
        )  # fmt: skip
        show_rows(header, rows, quiet=quiet)


def validation_cell(scores: dict[str, Any] | None) -> str:
    """The best epoch's held-out scores: ``1.2345 (1.78 bpc)`` for text, ``0.12 92%``."""
    if not scores:
        return ""
    if scores.get("bits_per_char") is not None:
        return f"{scores['loss']:.4f} ({scores['bits_per_char']:.2f} bpc)"
    return f"{scores['loss']:.4f} {scores.get('char_accuracy') or 0:.0%}"


VersionOption = Annotated[int | None, typer.Option(min=1, help="Default: the latest.")]
CHECKPOINT_FILES = ("checkpoint.json", "weights.safetensors")  # app.ml.checkpoint's names


@cli.command()
def delete(
    model_name: str,
    version: Annotated[
        int | None, typer.Option(min=1, help="Only this version; default: the whole model.")
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Delete a model and all its versions, or one version (refused while a job trains it).

    The server answers a delete with nothing, so --json and -q print nothing."""
    with connected(url, api_key) as client:
        client.delete(model_name, version)
    if not (as_json or quiet):
        what = model_name if version is None else f"{model_name} version {version}"
        emit(f"deleted {what}")


@cli.command()
def download(
    model_name: str,
    version: VersionOption = None,
    output: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Directory to write to; default: ./MODEL-vN."),
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Download a version's checkpoint (checkpoint.json and weights.safetensors).

    `charnn import` brings it into another (or the same) charnn. --json prints the
    version as the server describes it; -q the directory."""
    with connected(url, api_key) as client:
        if version is None:
            version = max(v["version"] for v in client.model(model_name)["versions"])
        described = client.version(model_name, version)
        directory = output or Path(f"{model_name}-v{version}")
        directory.mkdir(parents=True, exist_ok=True)
        for filename in CHECKPOINT_FILES:
            # written aside, then renamed: a broken download leaves no file that looks whole
            partial = directory / f".{filename}.partial"
            client.download(model_name, version, filename, partial)
            partial.replace(directory / filename)
    if as_json:
        emit_json(described)
    elif quiet:
        emit(directory)
    else:
        emit(f"{model_name} version {version} -> {directory}")


@cli.command("import")
def import_command(
    model_name: Annotated[str, typer.Argument(help="Model to import the checkpoint into.")],
    directory: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Holds checkpoint.json and weights.safetensors."
        ),
    ],
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Import a downloaded checkpoint as the next version of a model (verified by the server)."""
    meta, weights = (directory / filename for filename in CHECKPOINT_FILES)
    for path in (meta, weights):
        if not path.is_file():
            complain("error:", f"{path} is missing")
            raise typer.Exit(EXIT_REFUSED)
    with connected(url, api_key) as client:
        version = client.import_version(model_name, meta, weights)
    if as_json:
        emit_json(version)
    elif quiet:
        emit(version["version"])
    else:
        emit(f"imported as {model_name} version {version['version']}")


datasets = typer.Typer(help="Upload training data once and train on it by id.")
cli.add_typer(datasets, name="datasets", no_args_is_help=True)
DatasetKindOption = Annotated[
    str | None,
    typer.Option("--kind", help="text, pairs or labels; default: text, pairs for CSV/TSV/JSONL."),
]
DatasetFormatOption = Annotated[
    str | None, typer.Option("--format", help="text, csv, tsv or jsonl; default: the suffix's.")
]
ROW_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


@datasets.command("upload")
def datasets_upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file.")],
    kind: DatasetKindOption = None,
    format: DatasetFormatOption = None,  # noqa: A002 (the option's public name)
    name: Annotated[str | None, typer.Option("--name", help="A name to know it by.")] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Upload a file as a dataset (streamed); the same file twice is the same dataset."""
    suffix_format = ROW_FORMATS.get(path.suffix.lower())
    kind = kind or ("pairs" if suffix_format else "text")
    format = format or (suffix_format if kind != "text" else "text")
    with connected(url, api_key) as client:
        dataset = client.upload_dataset(path, kind=kind, format=format, name=name)
    if as_json:
        emit_json(dataset)
    elif quiet:
        emit(dataset["id"])
    else:
        emit(f"dataset {dataset['id']}: {dataset['kind']}, {dataset['characters']} characters")


@datasets.command("list")
def datasets_list(
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """List datasets, newest first (-q: ids)."""
    with connected(url, api_key) as client:
        page = client.datasets(limit=500)
    if as_json:
        emit_json(page)
        return
    rows = [
        (d["id"], d["kind"], d["name"] or "", str(d["characters"]), minute(d["created_at"]))
        for d in page["items"]
    ]
    show_rows(("id", "kind", "name", "characters", "created"), rows, quiet=quiet)


@datasets.command("show")
def datasets_show(
    dataset_id: str,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """One dataset, as JSON."""
    with connected(url, api_key) as client:
        emit_json(client.dataset(dataset_id))


@datasets.command("delete")
def datasets_delete(
    dataset_id: str,
    quiet: QuietOption = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Delete a dataset (refused while a job trains on it)."""
    with connected(url, api_key) as client:
        client.delete_dataset(dataset_id)
    if not quiet:
        emit(f"deleted dataset {dataset_id}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
