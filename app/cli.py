"""The ``charnn`` command."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from app.client import Client, ClientError, ServerUnavailable
from app.datafiles import DataFileError, read_training_data
from app.ml.hyperparameters import Architecture, Cell

if TYPE_CHECKING:
    from app.settings import Settings

out = Console()
err = Console(stderr=True)

cli = typer.Typer(
    name="charnn",
    help="Train and serve character-level recurrent networks.",
    no_args_is_help=True,
    add_completion=False,
)


@cli.callback()
def root() -> None:
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
        err.print(f"[red]refusing to listen on {host}:[/red] {LOCAL_ONLY}")
        raise typer.Exit(EXIT_REFUSED)
    if not is_loopback(host) and settings.host_names <= LOOPBACK_NAMES:
        err.print(
            f"[yellow]note:[/yellow] listening on {host}, but CHARNN_ALLOWED_HOSTS names only "
            "loopback: requests by any other name or address get 400; add the names "
            "clients use"
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
        err.print(f"[red]error:[/red] {exc}")
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
        if redis:
            from redis import Redis  # not app.jobs.queue: a health check must not load torch

            Redis.from_url(settings.redis_url, socket_timeout=5).ping()
        if database:
            from app.store.registry import Registry

            Registry.connect(settings.registry_url, migrate=False).ping()
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
        err.print(f"[red]error:[/red] {exc}")
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

EXIT_REFUSED = 2  # the server said no (4xx): fix the request
EXIT_UNAVAILABLE = 3  # no server, or it failed (5xx)
EXIT_JOB_FAILED = 1  # the job ended failed or cancelled

UrlOption = Annotated[str, typer.Option("--url", envvar="CHARNN_URL", help="The charnn server.")]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="CHARNN_API_KEY", help="Bearer API key.")
]


@contextmanager
def connected(url: str, api_key: str | None) -> Iterator[Client]:
    """A client whose errors become readable messages and exit codes that scripts can use."""
    client = Client(url, api_key)
    try:
        yield client
    except ClientError as exc:
        err.print(f"[red]refused ({exc.status}):[/red] {exc}")
        raise typer.Exit(EXIT_REFUSED) from exc
    except ServerUnavailable as exc:
        err.print(f"[red]server unavailable:[/red] {exc}")
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    finally:
        client.close()


@cli.command("train")
def train_command(
    model_name: Annotated[str, typer.Argument(help="Model to train a new version of.")],
    data_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV, TSV, JSONL pairs or text.")
    ],
    text: Annotated[bool, typer.Option("--text", help="Treat the file as plain text.")] = False,
    architecture: Annotated[Architecture | None, typer.Option()] = None,
    cell: Annotated[Cell | None, typer.Option()] = None,
    hidden_size: Annotated[int | None, typer.Option()] = None,
    embedding_size: Annotated[int | None, typer.Option()] = None,
    num_layers: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    follow: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Start a training job from a data file; --follow shows it learn, epoch by epoch."""
    try:
        data = read_training_data(data_file, text=text)
    except (DataFileError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_REFUSED) from exc
    given = {
        "architecture": architecture,
        "cell": cell,
        "hidden_size": hidden_size,
        "embedding_size": embedding_size,
        "num_layers": num_layers,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
    }
    hyperparameters = {k: v for k, v in given.items() if v is not None}
    spec = {"model_name": model_name, "data": data, "hyperparameters": hyperparameters}
    with connected(url, api_key) as client:
        job = client.train(spec)
        out.print(f"job [bold]{job['id']}[/bold] queued")
        if follow:
            job = follow_job(client, job)
            if job["status"] != "succeeded":
                err.print(f"[red]job {job['status']}:[/red] {job.get('error') or ''}")
                raise typer.Exit(EXIT_JOB_FAILED)
            out.print(f"[green]{model_name} version {job['version']} is ready[/green]")


def follow_job(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    """A progress bar with loss, accuracy and the sample prediction of each epoch."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out) as progress:
        bar = progress.add_task(job["model_name"], total=job["epochs"], detail=job["status"])
        for event, data in client.follow(job["id"]):
            if event == "epoch":
                progress.update(bar, completed=data["epoch"], detail=epoch_line(data))
                continue
            job = data  # its status changed, or it ended
            if not job["epoch"]:
                progress.update(bar, detail=job["status"])
    return job


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
    top_k: Annotated[int, typer.Option(help="Also show the k likeliest characters.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw response.")] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Map each input to its output, one line each."""
    with connected(url, api_key) as client:
        answer = client.predict(model_name, inputs, version=version, top_k=top_k or None)
    if as_json:
        out.print_json(data=answer)
        return
    for output in answer["outputs"]:
        out.print(output, markup=False, highlight=False)


@cli.command()
def generate(
    model_name: str,
    prompt: str,
    length: Annotated[int, typer.Option(min=1)] = 100,
    temperature: Annotated[float, typer.Option(min=0.0)] = 1.0,
    seed: Annotated[int | None, typer.Option()] = None,
    version: Annotated[int | None, typer.Option()] = None,
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
    out.print(answer["text"], markup=False, highlight=False)


@cli.command()
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show one job in full.")] = None,
    history: Annotated[bool, typer.Option(help="With one job: every epoch's metrics too.")] = False,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """List jobs (newest first), or show one."""
    with connected(url, api_key) as client:
        if job_id is not None:
            out.print_json(data=client.job(job_id, history=history))
            return
        page = client.jobs(status=status, model_name=model, limit=limit)
    table = Table("id", "model", "status", "epoch", "version", "created")
    for job in page["items"]:
        table.add_row(
            job["id"],
            job["model_name"],
            job["status"],
            f"{job['epoch']}/{job['epochs']}",
            str(job["version"] or ""),
            job["created_at"][:19],
        )
    out.print(table)
    out.print(f"{len(page['items'])} of {page['total']}")


@cli.command()
def cancel(
    job_id: str,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """Cancel a job (a running one stops within one epoch)."""
    with connected(url, api_key) as client:
        job = client.cancel(job_id)
    out.print(f"job {job['id']}: {job['status']}")


@cli.command()
def models(
    name: Annotated[str | None, typer.Argument(help="Show one model's versions.")] = None,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: KeyOption = None,
) -> None:
    """List models, or one model's versions."""
    with connected(url, api_key) as client:
        if name is None:
            table = Table("model", "latest version", "versions", "created")
            for model in client.models():
                table.add_row(
                    model["name"],
                    str(model["latest_version"] or ""),
                    str(model["version_count"]),
                    model["created_at"][:19],
                )
            out.print(table)
            return
        model = client.model(name)
    table = Table("version", "task", "architecture", "epochs", "loss", "accuracy", "created")
    for v in model["versions"]:
        metrics = v["metrics"] or {}
        table.add_row(
            str(v["version"]),
            v["task"],
            f"{v['config']['architecture']}/{v['config']['cell']}",
            str(v["epochs"]),
            f"{metrics.get('loss', float('nan')):.4f}",
            f"{metrics.get('train_char_accuracy', 0):.0%}",
            v["created_at"][:19],
        )
    out.print(table)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
