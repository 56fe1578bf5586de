"""Training: the loss and its bookkeeping, callbacks, cancellation, seeds and resuming."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional

from app.ml.checkpoint import load_checkpoint, save_checkpoint
from app.ml.data import IGNORE_INDEX, Batch, Dataset, pairs_dataset
from app.ml.errors import CheckpointError, TrainingDivergedError
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Predictor
from app.ml.metrics import EpochMetrics
from app.ml.train import Tally, TrainingOutcome, TrainingSession, sequence_loss, train

CPU = torch.device("cpu")
HELLO = [("hello", "ohlol")]


def caesar(word: str) -> str:
    """Each of 'abcd' shifted to the next one: a -> b, ..., d -> a."""
    return "".join(chr((ord(c) - ord("a") + 1) % 4 + ord("a")) for c in word)


# twelve aligned pairs of mixed lengths
WORDS = ["abc", "bcad", "cabd", "dabca", "ab", "bca", "cdab", "abcd", "dcba", "bb", "acd", "dd"]
CAESAR_PAIRS = [(word, caesar(word)) for word in WORDS]


def trained(hp: Hyperparameters, pairs: list[tuple[str, str]] = HELLO) -> TrainingSession:
    session = TrainingSession.start(hp, pairs_dataset(pairs), CPU)
    train(session)
    return session


def weights_equal(a: TrainingSession, b: TrainingSession) -> bool:
    mine, theirs = a.model.state_dict(), b.model.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def record(history: list[EpochMetrics]) -> list[dict[str, Any]]:
    """Everything an epoch reports except its wall-clock time."""
    return [m.model_dump(exclude={"seconds"}) for m in history]


# --- the loss and the accuracies ignore padding -------------------------------------------

# two rows, the second padded after 2 characters
TARGETS = torch.tensor([[0, 1, 2], [2, 0, IGNORE_INDEX]])
LENGTHS = torch.tensor([3, 2])


def test_rnn_cell_loss_sums_each_sequence_then_averages_over_the_batch() -> None:
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))

    loss, averaged_over = sequence_loss("rnn_cell", logits, TARGETS)

    per_sequence = [
        functional.cross_entropy(logits[0], TARGETS[0], reduction="sum"),
        functional.cross_entropy(logits[1, :2], TARGETS[1, :2], reduction="sum"),
    ]
    assert averaged_over == "sequences"
    assert torch.allclose(loss, sum(per_sequence) / 2)


def test_fused_variants_average_the_loss_over_real_characters() -> None:
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))

    loss, averaged_over = sequence_loss("embedding_rnn", logits, TARGETS)

    real = torch.cat([logits[0], logits[1, :2]])
    assert averaged_over == "characters"
    assert torch.allclose(loss, functional.cross_entropy(real, torch.tensor([0, 1, 2, 2, 0])))


@pytest.mark.parametrize("architecture", ["rnn_cell", "embedding_rnn"])
def test_logits_at_padded_positions_never_change_the_loss(architecture: str) -> None:
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    garbage = logits.clone()
    garbage[1, 2] = torch.tensor([1e4, -1e4, 0.0, 5.0])

    assert torch.equal(
        sequence_loss(architecture, logits, TARGETS)[0],
        sequence_loss(architecture, garbage, TARGETS)[0],
    )


def test_accuracy_counts_real_characters_only() -> None:
    # right everywhere that counts except row 1, position 0; the padded position's
    # prediction (class 3) matches nothing
    predicted = torch.tensor([[0, 1, 2], [1, 0, 3]])
    batch = Batch(inputs=torch.zeros(2, 3, dtype=torch.long), targets=TARGETS, lengths=LENGTHS)
    tally = Tally(loss=torch.zeros(()))

    tally.add(torch.tensor(0.5), functional.one_hot(predicted, 4).float(), batch, weight=2)

    loss, char_accuracy, seq_accuracy = tally.summary()
    assert tally.chars == 5
    assert char_accuracy == 4 / 5
    assert seq_accuracy == 1 / 2  # the padded row is wrong only where it has a character
    assert loss == 0.5


def test_epoch_metrics_count_real_characters() -> None:
    hp = Hyperparameters(epochs=1, validation_fraction=0.0, seed=0)

    session = trained(hp, CAESAR_PAIRS)

    assert session.history[0].characters == sum(len(word) for word in WORDS)


# --- the loop -----------------------------------------------------------------------------


def test_each_epoch_is_reported_to_the_callback() -> None:
    hp = Hyperparameters(epochs=3, validation_fraction=0.0, seed=0)
    session = TrainingSession.start(hp, pairs_dataset(HELLO), CPU)
    seen: list[EpochMetrics] = []

    outcome = train(session, on_epoch_end=lambda _session, metrics: seen.append(metrics))

    assert outcome == TrainingOutcome("completed", epochs_completed=3, stop_reason="completed")
    assert [m.epoch for m in seen] == [1, 2, 3]
    assert seen == session.history
    assert seen[-1].sample_input == "hello"
    assert len(seen[-1].sample_prediction) == 5


def test_held_out_examples_are_evaluated_every_epoch() -> None:
    hp = Hyperparameters(epochs=2, validation_fraction=0.25, seed=0)

    session = trained(hp, CAESAR_PAIRS)

    assert session.val_examples is not None
    assert len(session.val_examples) == 3
    assert all(m.val_loss is not None and m.val_char_accuracy is not None for m in session.history)


def test_without_a_validation_split_there_are_no_validation_metrics() -> None:
    session = trained(Hyperparameters(epochs=1, validation_fraction=0.0, seed=0))

    assert session.val_examples is None
    assert session.history[0].val_loss is None


# --- divergence ---------------------------------------------------------------------------

# SGD's weight decay multiplies every weight by 1 - learning_rate x weight_decay = -9 at
# each step: the logits leave float32's range within a few dozen steps, whatever the data
DIVERGING = {"optimizer": "sgd", "learning_rate": 10.0, "weight_decay": 1.0, "seed": 0}
ADVICE = (
    ": the training diverged; lower hyperparameters.learning_rate (or weight_decay), "
    "or set hyperparameters.grad_clip"
)


def test_a_loss_that_becomes_nan_stops_training_at_that_epoch() -> None:
    hp = Hyperparameters(epochs=60, validation_fraction=0.0, **DIVERGING)
    session = TrainingSession.start(hp, pairs_dataset(HELLO), CPU)
    seen: list[EpochMetrics] = []

    with pytest.raises(TrainingDivergedError) as raised:
        train(session, on_epoch_end=lambda _session, metrics: seen.append(metrics))

    assert str(raised.value) == "loss became NaN at epoch 22" + ADVICE
    assert (raised.value.quantity, raised.value.epoch) == ("loss", 22)
    assert [m.epoch for m in seen] == list(range(1, 22))  # the diverged epoch is never reported
    assert session.epoch == 21
    assert all(torch.isfinite(torch.tensor(m.loss)) for m in seen)


def test_a_validation_loss_that_becomes_nan_stops_training_too() -> None:
    hp = Hyperparameters(epochs=60, validation_fraction=0.25, **DIVERGING)
    session = TrainingSession.start(hp, pairs_dataset(CAESAR_PAIRS), CPU)

    with pytest.raises(TrainingDivergedError, match="^validation loss became NaN at epoch 21: "):
        train(session)

    assert [m.epoch for m in session.history] == list(range(1, 21))


def test_an_infinite_loss_is_named_so() -> None:
    error = TrainingDivergedError("loss", float("-inf"), 3)

    assert str(error) == "loss became infinite at epoch 3" + ADVICE


def test_metrics_are_finite_numbers() -> None:
    with pytest.raises(ValueError, match="finite number"):
        EpochMetrics(
            epoch=1,
            loss=float("nan"),
            train_char_accuracy=0.5,
            train_seq_accuracy=0.0,
            sample_input="hello",
            sample_prediction="ohlol",
            seconds=0.1,
            characters=5,
        )


@pytest.mark.gpu
def test_on_a_gpu_divergence_is_caught_at_the_end_of_its_epoch() -> None:
    # no step waits for the device there: the running sum of the losses carries the NaN
    hp = Hyperparameters(epochs=60, validation_fraction=0.0, **DIVERGING)
    session = TrainingSession.start(hp, pairs_dataset(HELLO), torch.device("cuda"))

    with pytest.raises(TrainingDivergedError, match="^loss became NaN at epoch 2[0-9]: "):
        train(session)

    assert all(torch.isfinite(torch.tensor(m.loss)) for m in session.history)


def test_stopping_midway_abandons_the_epoch_in_progress() -> None:
    # 12 examples in batches of 4: 3 steps an epoch; 7 steps end inside epoch 3
    hp = Hyperparameters(epochs=5, batch_size=4, validation_fraction=0.0, seed=0)
    session = TrainingSession.start(hp, pairs_dataset(CAESAR_PAIRS), CPU)
    steps = itertools.count()

    outcome = train(session, should_stop=lambda: next(steps) >= 7)

    assert outcome == TrainingOutcome("cancelled", epochs_completed=2)
    assert session.epoch == 2
    assert [m.epoch for m in session.history] == [1, 2]


def test_stopping_before_the_first_step_completes_nothing() -> None:
    session = TrainingSession.start(Hyperparameters(seed=0), pairs_dataset(HELLO), CPU)

    assert train(session, should_stop=lambda: True) == TrainingOutcome("cancelled", 0)


# --- seeds --------------------------------------------------------------------------------

DROPOUT_HP = Hyperparameters(
    num_layers=2, dropout=0.3, batch_size=4, validation_fraction=0.25, epochs=4, seed=5
)


def test_a_fixed_seed_makes_cpu_runs_identical_bit_for_bit() -> None:
    first, second = trained(DROPOUT_HP, CAESAR_PAIRS), trained(DROPOUT_HP, CAESAR_PAIRS)

    assert weights_equal(first, second)
    assert record(first.history) == record(second.history)


def test_another_seed_gives_another_model() -> None:
    first = trained(DROPOUT_HP, CAESAR_PAIRS)
    second = trained(DROPOUT_HP.model_copy(update={"seed": 6}), CAESAR_PAIRS)

    assert not weights_equal(first, second)


def test_a_missing_seed_is_drawn_and_recorded_in_the_checkpoint() -> None:
    session = TrainingSession.start(Hyperparameters(seed=None), pairs_dataset(HELLO), CPU)

    assert 0 <= session.seed < 2**63
    assert session.checkpoint().hyperparameters.seed == session.seed


# --- checkpoints of a session -------------------------------------------------------------


def test_a_checkpoint_is_a_snapshot_that_later_training_leaves_alone() -> None:
    session = TrainingSession.start(Hyperparameters(epochs=2, seed=0), pairs_dataset(HELLO), CPU)
    checkpoint = session.checkpoint()
    before = {name: tensor.clone() for name, tensor in checkpoint.weights.items()}

    train(session)

    assert all(torch.equal(checkpoint.weights[name], before[name]) for name in before)
    assert not torch.equal(session.model.state_dict()["head.weight"], before["head.weight"])


OPTIMIZERS = {
    "adam": {"optimizer": "adam"},
    "adamw": {"optimizer": "adamw", "weight_decay": 0.01},
    "sgd-momentum": {"optimizer": "sgd", "learning_rate": 0.2, "momentum": 0.9},
}


def train_until_epoch_5_then_checkpoint(hp: Hyperparameters, dataset: Dataset, path: Path) -> None:
    """A job that saves after epoch 5 and is then stopped (say, its worker died)."""

    def save_at_epoch_5(session: TrainingSession, metrics: EpochMetrics) -> None:
        if metrics.epoch == 5:
            save_checkpoint(session.checkpoint(), path)

    session = TrainingSession.start(hp, dataset, CPU)
    outcome = train(session, on_epoch_end=save_at_epoch_5, should_stop=path.exists)
    assert outcome == TrainingOutcome("cancelled", epochs_completed=5)


@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_resumed_training_is_identical_to_uninterrupted_training(
    tmp_path: Path, optimizer: dict[str, Any]
) -> None:
    # shuffling, dropout, 3 batches an epoch (9 examples) and 3 held out: every random
    # generator and the optimizer's state must come back for this to hold
    hp = DROPOUT_HP.model_copy(update={"epochs": 10, **optimizer})
    dataset = pairs_dataset(CAESAR_PAIRS)
    straight = TrainingSession.start(hp, dataset, CPU)
    train(straight)
    train_until_epoch_5_then_checkpoint(hp, dataset, tmp_path / "epoch-5")

    torch.manual_seed(1234)  # whatever the new process's generators hold
    checkpoint = load_checkpoint(tmp_path / "epoch-5", with_training_state=True)
    resumed = TrainingSession.resume(checkpoint, dataset, CPU)
    outcome = train(resumed)

    assert outcome == TrainingOutcome("completed", epochs_completed=10, stop_reason="completed")
    assert record(resumed.history) == record(straight.history)
    assert weights_equal(resumed, straight)


def test_resuming_needs_the_training_state(tmp_path: Path) -> None:
    session = trained(Hyperparameters(epochs=1, seed=0))
    save_checkpoint(session.checkpoint(), tmp_path / "ckpt")
    weights_only = load_checkpoint(tmp_path / "ckpt")  # with_training_state=False

    with pytest.raises(CheckpointError, match="holds no training state"):
        TrainingSession.resume(weights_only, pairs_dataset(HELLO), CPU)


# --- cells beyond the tutorial ------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn", "embedding_rnn"])
def test_gru_and_lstm_cells_train_and_round_trip(
    tmp_path: Path, architecture: str, cell: str
) -> None:
    hp = Hyperparameters(architecture=architecture, cell=cell, learning_rate=0.1, epochs=10, seed=0)
    session = trained(hp)
    save_checkpoint(session.checkpoint(), tmp_path / "ckpt")

    in_memory = Predictor.from_checkpoint(session.checkpoint(), CPU)
    reloaded = Predictor.from_checkpoint(load_checkpoint(tmp_path / "ckpt"), CPU)

    hello = session.dataset.vocab.encode_inputs(["hello"])
    assert session.history[-1].loss < session.history[0].loss
    assert torch.equal(in_memory.logits(hello)[0], reloaded.logits(hello)[0])
