"""The ``charnn`` command."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import typer

from app.ml.hyperparameters import Architecture, Cell

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


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Run the HTTP service on its embedded defaults (SQLite registry, local job runner)."""
    import uvicorn

    uvicorn.run("app.main:app", host=host, port=port, log_level=log_level, access_log=access_log)


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
    from app.settings import get_settings

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    torch.set_num_threads(settings.training_threads)
    run_worker(settings, queue, burst=burst)


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
            from app.jobs.queue import connect

            connect(settings).ping()
        if database:
            from app.store.registry import Registry

            Registry.connect(settings.registry_url, migrate=False).ping()
    except Exception as exc:
        typer.echo(f"unhealthy: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("ok")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
