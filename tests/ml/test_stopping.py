"""Training that stops when it should: budgets, schedules, early stopping and best weights,
step progress, resuming within an epoch, bits per character, format-1 checkpoints."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from app.ml.checkpoint import BEST_FILE, META_FILE, load_checkpoint, save_checkpoint
from app.ml.data import Dataset, pairs_dataset, text_dataset
from app.ml.errors import ConfigurationError
from app.ml.hyperparameters import Hyperparameters
from app.ml.metrics import EpochMetrics, StepProgress
from app.ml.schedule import learning_rate_at
from app.ml.train import SECONDS_TO_START, TrainingOutcome, TrainingSession, estimate_seconds, train

CPU = torch.device("cpu")
WORDS = ["abc", "bcad", "cabd", "dabca", "ab", "bca", "cdab", "abcd", "dcba", "bb", "acd", "dd"]
PAIRS = pairs_dataset([(w, w[::-1]) for w in WORDS])
# 12 pairs, 3 held out, 9 trained on in batches of 4: 3 steps an epoch
HP = Hyperparameters(
    num_layers=2, dropout=0.3, batch_size=4, validation_fraction=0.25, epochs=6, seed=5
)
TEXT = text_dataset("the cat sat on the mat; the rat ate the hat. " * 6, seq_len=8)
TEXT_HP = Hyperparameters(
    cell="gru", hidden_size=16, embedding_size=8, batch_size=5, epochs=3, seed=3
)


def weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def record(history: list[EpochMetrics]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude={"seconds"}) for m in history]


def run(hp: Hyperparameters, dataset: Dataset = PAIRS, **callbacks: Any) -> TrainingSession:
    session = TrainingSession.start(hp, dataset, CPU)
    train(session, **callbacks)
    return session


# --- budgets ------------------------------------------------------------------------------


def test_max_steps_stops_within_an_epoch_and_scores_the_partial_epoch() -> None:
    session = TrainingSession.start(HP.model_copy(update={"max_steps": 4}), PAIRS, CPU)

    outcome = train(session)

    assert outcome == TrainingOutcome("completed", epochs_completed=2, stop_reason="max_steps")
    assert session.step == 4
    assert [m.steps for m in session.history] == [3, 4]
    assert session.history[-1].val_loss is not None  # validated like a whole epoch


def test_max_seconds_stops_a_run_that_would_take_far_longer() -> None:
    session = TrainingSession.start(
        HP.model_copy(update={"epochs": 100_000, "max_seconds": 0.5}), PAIRS, CPU
    )

    outcome = train(session)

    assert outcome.stop_reason == "max_seconds"
    assert 1 <= outcome.epochs_completed < 100_000
    assert 0.5 <= session.trained_seconds < 10


def test_a_run_that_spends_no_budget_completes() -> None:
    session = run(HP.model_copy(update={"max_steps": 1000, "max_seconds": 600.0}))

    assert session.stop_reason == "completed"
    assert session.epoch == 6


# --- schedules ----------------------------------------------------------------------------


def learning_rates_per_step(hp: Hyperparameters) -> list[float]:
    seen: list[StepProgress] = []
    session = run(
        hp.model_copy(update={"checkpoint_every_steps": 1}),
        on_progress=lambda _s, progress: seen.append(progress),
        on_epoch_end=lambda s, m: seen.append(
            StepProgress(
                step=s.step, epoch=m.epoch, batch=3, batches=3, epoch_fraction=1,
                loss=m.loss, learning_rate=m.learning_rate or 0, chars_per_second=0,
            )
        ),
    )  # fmt: skip
    assert [p.step for p in seen] == list(range(1, session.step + 1))
    return [p.learning_rate for p in seen]


def test_cosine_warms_up_then_decays_to_the_minimum_over_the_planned_steps() -> None:
    hp = HP.model_copy(
        update={"lr_schedule": "cosine", "warmup_steps": 3, "min_learning_rate": 0.005}
    )  # 6 epochs x 3 steps: 18 planned

    rates = learning_rates_per_step(hp)

    assert rates[:3] == pytest.approx([0.05 * 1 / 4, 0.05 * 2 / 4, 0.05 * 3 / 4])
    assert rates[3] == pytest.approx(0.05)  # the peak, then half a cosine
    middle = 3 + (18 - 3) // 2
    assert rates[middle] == pytest.approx(0.005 + 0.045 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert all(a > b for a, b in itertools_pairs(rates[3:]))
    assert rates[-1] == pytest.approx(learning_rate_at(hp, 17, 18, 1.0))
    assert learning_rate_at(hp, 18, 18, 1.0) == pytest.approx(0.005)


def test_cosine_plans_over_max_steps_when_that_comes_first() -> None:
    hp = HP.model_copy(update={"lr_schedule": "cosine", "max_steps": 6})

    rates = learning_rates_per_step(hp)

    assert len(rates) == 6
    assert rates[-1] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def itertools_pairs(values: list[float]) -> list[tuple[float, float]]:
    return list(zip(values, values[1:], strict=False))


def test_plateau_multiplies_the_rate_when_validation_stops_improving() -> None:
    # a min_delta no loss can beat: every epoch after the first is a plateau
    hp = HP.model_copy(
        update={
            "lr_schedule": "plateau",
            "plateau_factor": 0.5,
            "plateau_patience": 1,
            "min_delta": 1000.0,
            "epochs": 6,
        }
    )

    session = run(hp)

    # epoch 1 sets the best; 2 is tolerated; 3 is one too many: halved, and so on
    assert [m.learning_rate for m in session.history] == pytest.approx(
        [0.05, 0.05, 0.05, 0.025, 0.025, 0.0125]
    )


def test_a_constant_rate_stays_and_is_recorded() -> None:
    assert {m.learning_rate for m in run(HP).history} == {0.05}


# --- early stopping and the best weights --------------------------------------------------


def test_early_stopping_keeps_the_best_epochs_weights() -> None:
    hp = HP.model_copy(update={"early_stopping_patience": 2, "min_delta": 1000.0})
    at_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def keep(session: TrainingSession, metrics: EpochMetrics) -> None:
        at_epoch[metrics.epoch] = {k: v.clone() for k, v in session.model.state_dict().items()}

    session = TrainingSession.start(hp, PAIRS, CPU)
    outcome = train(session, on_epoch_end=keep)
    version = session.checkpoint(with_training_state=False)

    assert outcome.stop_reason == "early_stopping"
    assert outcome.epochs_completed == 3  # the best, then two without improvement
    assert version.best_epoch == 1
    assert version.stop_reason == "early_stopping"
    assert weights_equal(version.weights, at_epoch[1])
    assert not weights_equal(version.weights, at_epoch[3])


def test_the_best_epoch_is_the_lowest_validation_loss() -> None:
    session = run(HP.model_copy(update={"epochs": 8}))

    losses = [m.val_loss for m in session.history]
    assert session.best_epoch == 1 + losses.index(min(x for x in losses if x is not None))


def test_without_validation_the_best_is_the_last() -> None:
    session = run(HP.model_copy(update={"validation_fraction": 0.0, "epochs": 3}))
    version = session.checkpoint(with_training_state=False)

    assert version.best_epoch == 3
    assert weights_equal(version.weights, session.model.state_dict())


def test_early_stopping_and_plateau_need_validation_data() -> None:
    with pytest.raises(ValidationError, match="early_stopping_patience needs validation data"):
        Hyperparameters(validation_fraction=0.0, early_stopping_patience=2)
    with pytest.raises(ValidationError, match="'plateau' needs validation data"):
        Hyperparameters(validation_fraction=0.0, lr_schedule="plateau")
    few = Hyperparameters(validation_fraction=0.1, early_stopping_patience=2)
    with pytest.raises(ConfigurationError, match="holds none out"):
        TrainingSession.start(few, pairs_dataset([("hello", "ohlol")]), CPU)


# --- progress and resuming within an epoch ------------------------------------------------


def test_progress_is_reported_every_n_steps_within_epochs() -> None:
    seen: list[StepProgress] = []
    hp = HP.model_copy(update={"checkpoint_every_steps": 2, "epochs": 2})

    run(hp, on_progress=lambda _s, progress: seen.append(progress))

    # steps 2 (epoch 1, batch 2) and 5 (epoch 2, batch 2); epoch ends report themselves
    assert [(p.step, p.epoch, p.batch) for p in seen] == [(2, 1, 2), (5, 2, 2)]
    assert seen[0].epoch_fraction == pytest.approx(2 / 3)
    assert seen[0].chars_per_second > 0
    assert seen[0].bits_per_char is None  # pairs


def stop_at_step(hp: Hyperparameters, dataset: Dataset, step: int, path: Path) -> TrainingOutcome:
    """A job that checkpoints at ``step`` within an epoch, then dies."""

    def save(session: TrainingSession, _progress: StepProgress) -> None:
        if session.step == step:
            save_checkpoint(session.checkpoint(), path)

    session = TrainingSession.start(hp, dataset, CPU)
    return train(session, on_progress=save, should_stop=path.exists)


MID_EPOCH_RUNS = {
    "pairs-dropout-adam": (HP.model_copy(update={"checkpoint_every_steps": 1}), PAIRS, 7),
    "text-cosine": (
        TEXT_HP.model_copy(
            update={"checkpoint_every_steps": 2, "lr_schedule": "cosine", "warmup_steps": 2}
        ),
        TEXT,
        4,
    ),
    "plateau-early-stopping": (
        HP.model_copy(
            update={
                "checkpoint_every_steps": 1,
                "lr_schedule": "plateau",
                "plateau_patience": 0,
                "early_stopping_patience": 3,
                "min_delta": 0.01,
                "epochs": 12,
            }
        ),
        PAIRS,
        8,
    ),
}


@pytest.mark.parametrize(
    ("hp", "dataset", "step"), MID_EPOCH_RUNS.values(), ids=MID_EPOCH_RUNS.keys()
)
def test_a_run_resumed_within_an_epoch_is_identical_to_one_never_stopped(
    tmp_path: Path, hp: Hyperparameters, dataset: Dataset, step: int
) -> None:
    straight = run(hp, dataset)
    path = tmp_path / "mid-epoch"
    assert stop_at_step(hp, dataset, step, path).status == "cancelled"

    torch.manual_seed(1234)  # whatever the new process's generators hold
    checkpoint = load_checkpoint(path, with_training_state=True)
    assert checkpoint.training is not None
    assert checkpoint.training.loop.batch_in_epoch > 0
    resumed = TrainingSession.resume(checkpoint, dataset, CPU)
    train(resumed)

    assert record(resumed.history) == record(straight.history)
    assert weights_equal(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.stop_reason == straight.stop_reason
    best, straight_best = resumed.best_weights, straight.best_weights
    assert best is not None
    assert straight_best is not None
    assert weights_equal(best, straight_best)


# --- bits per character -------------------------------------------------------------------


def test_text_reports_bits_per_character_beside_the_loss() -> None:
    seen: list[StepProgress] = []
    session = run(
        TEXT_HP.model_copy(update={"checkpoint_every_steps": 2}),
        TEXT,
        on_progress=lambda _s, p: seen.append(p),
    )

    for metrics in session.history:
        assert metrics.bits_per_char == pytest.approx(metrics.loss / math.log(2))
        assert metrics.val_loss is not None
        assert metrics.val_bits_per_char == pytest.approx(metrics.val_loss / math.log(2))
    assert seen
    assert all(p.bits_per_char == pytest.approx(p.loss / math.log(2)) for p in seen)


def test_pairs_have_no_bits_per_character() -> None:
    metrics = run(HP.model_copy(update={"epochs": 1})).history[0]

    assert metrics.bits_per_char is None
    assert metrics.val_bits_per_char is None


# --- checkpoints of format 1 --------------------------------------------------------------


def as_format_1(directory: Path) -> None:
    """Rewrite a checkpoint as the previous charnn wrote it: no best weights, no position."""
    meta = json.loads((directory / META_FILE).read_text())
    meta["format_version"] = 1
    for key in ("best_epoch", "stop_reason"):
        del meta[key]
    del meta["training"]["loop"]
    del meta["files"][BEST_FILE]
    (directory / BEST_FILE).unlink()
    (directory / META_FILE).write_text(json.dumps(meta))


def test_a_format_1_checkpoint_loads_and_resumes(tmp_path: Path) -> None:
    hp = HP.model_copy(update={"epochs": 4})
    straight = run(hp)
    saved = tmp_path / "epoch-2"

    def save_at_2(session: TrainingSession, metrics: EpochMetrics) -> None:
        if metrics.epoch == 2:
            save_checkpoint(session.checkpoint(), saved)

    train(TrainingSession.start(hp, PAIRS, CPU), on_epoch_end=save_at_2, should_stop=saved.exists)
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    as_format_1(old)

    checkpoint = load_checkpoint(old, with_training_state=True)
    resumed = TrainingSession.resume(checkpoint, PAIRS, CPU)
    train(resumed)

    assert checkpoint.best_epoch is None
    assert checkpoint.stop_reason is None
    assert record(resumed.history) == record(straight.history)
    assert weights_equal(resumed.model.state_dict(), straight.model.state_dict())
    assert load_checkpoint(old).epoch == 2  # and it serves, without training state


# --- what a job with budgets is estimated to cost ---------------------------------------


def test_the_estimate_counts_the_budgets() -> None:
    session = TrainingSession.start(HP.model_copy(update={"epochs": 1000}), PAIRS, CPU)

    def estimate(**budgets: Any) -> float:
        hp = session.hyperparameters.model_copy(update=budgets)
        return estimate_seconds(hp, session.config, 1000, PAIRS.examples, threads=1)

    unbounded = estimate()
    assert estimate(max_steps=30) == pytest.approx(
        SECONDS_TO_START + (unbounded - SECONDS_TO_START) / 1000 * 30 / 3
    )  # 30 steps of 3 an epoch: 10 epochs
    epoch = (unbounded - SECONDS_TO_START) / 1000
    assert estimate(max_seconds=2.0) == pytest.approx(SECONDS_TO_START + 2.0 + epoch)
    assert estimate(max_seconds=2.0) < estimate(max_seconds=20.0) < unbounded
