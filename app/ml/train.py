"""Training: a plain function over a session, reporting through callbacks.

    session = TrainingSession.start(hyperparameters, dataset, device)
    outcome = train(session, on_epoch_end=save_and_report, on_progress=save_and_report,
                    should_stop=cancelled, progress_seconds=30)

The session holds everything that changes while training (model, optimizer, epoch,
step, the unfinished epoch's sums, the best weights, every random generator), so
``session.checkpoint()`` taken in any callback, after an epoch or within one,
resumes through ``TrainingSession.resume`` exactly as if it never stopped.

Training ends at the first of: its epochs, ``max_steps`` optimizer steps,
``max_seconds`` of training, or ``early_stopping_patience`` epochs without a better
validation loss. The session then holds why (``stop_reason``) and the weights of its
best validation epoch (``best_weights``, ``best_epoch``; the last without validation
data). The loop knows nothing of where checkpoints go or who listens; minGPT's
trainer is the model. A loss that becomes NaN or infinite ends training with
``TrainingDivergedError``, before any callback sees that epoch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from app.ml.checkpoint import Checkpoint, LoopPosition, TrainingState
from app.ml.data import IGNORE_INDEX, Batch, Dataset, ExampleSet, batches, split
from app.ml.errors import ConfigurationError, TrainingDivergedError
from app.ml.hyperparameters import Hyperparameters
from app.ml.metrics import EpochMetrics, StepProgress, StopReason, TallySums, bits
from app.ml.model import ModelConfig, build_model
from app.ml.schedule import ValidationWatch, learning_rate_at, planned_steps

# --- loss ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Running sums over an epoch, kept on the device so steps never wait for the host.

    A classifier's batch has one target per sequence: its character accuracy, sequence
    accuracy and label accuracy are one number, counted over sequences.
    """

    loss: torch.Tensor
    weight: int = 0
    correct_chars: torch.Tensor | int = 0
    chars: int = 0
    correct_seqs: torch.Tensor | int = 0
    seqs: int = 0
    scored_chars: int = 0  # what character accuracy divides by: characters, or labels

    def add(self, loss: torch.Tensor, logits: torch.Tensor, batch: Batch, weight: int) -> None:
        if batch.targets.dim() == 1:  # (B,) labels against logits (B, V)
            self.add_labels(loss, logits, batch, weight)
            return
        mask = batch.targets != IGNORE_INDEX
        hits = (logits.argmax(-1) == batch.targets) & mask
        self.loss = self.loss + loss.detach() * weight
        self.weight += weight
        self.correct_chars = self.correct_chars + hits.sum()
        self.chars += int(batch.lengths.sum())
        self.scored_chars += int(batch.lengths.sum())
        self.correct_seqs = self.correct_seqs + (hits | ~mask).all(dim=1).sum()
        self.seqs += batch.inputs.size(0)

    def add_labels(
        self, loss: torch.Tensor, logits: torch.Tensor, batch: Batch, weight: int
    ) -> None:
        hits = (logits.argmax(-1) == batch.targets).sum()
        self.loss = self.loss + loss.detach() * weight
        self.weight += weight
        self.correct_chars = self.correct_chars + hits
        self.correct_seqs = self.correct_seqs + hits
        self.chars += int(batch.lengths.sum())
        self.scored_chars += batch.inputs.size(0)
        self.seqs += batch.inputs.size(0)

    @property
    def nats_per_char(self) -> float:
        """The loss per character, whatever the architecture averages over: the running
        sum is of nats in either case (a sequence's sum, or a character's loss, times
        the count it was averaged over)."""
        return float(self.loss) / max(self.chars, 1)

    def sums(self) -> TallySums:
        return TallySums(
            loss=float(self.loss),
            weight=self.weight,
            correct_chars=int(self.correct_chars),
            chars=self.chars,
            correct_seqs=int(self.correct_seqs),
            seqs=self.seqs,
            scored_chars=self.scored_chars,
        )

    @classmethod
    def restore(cls, sums: TallySums, device: torch.device) -> Tally:
        # float32, as the running sum was: the stored float is that float32 exactly
        loss = torch.tensor(sums.loss, dtype=torch.float32, device=device)
        return cls(
            loss,
            sums.weight,
            sums.correct_chars,
            sums.chars,
            sums.correct_seqs,
            sums.seqs,
            sums.scored_chars,
        )

    def summary(self) -> tuple[float, float, float]:
        """(mean loss, character accuracy, sequence accuracy)."""
        return (
            float(self.loss) / max(self.weight, 1),
            float(self.correct_chars) / max(self.scored_chars, 1),
            float(self.correct_seqs) / max(self.seqs, 1),
        )


def sequence_loss(
    architecture: str, logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, Literal["sequences", "characters"]]:
    """The loss of a batch, and what it is averaged over.

    The tutorial's ``rnn_cell`` adds one cross-entropy per time step
    (``loss += criterion(hidden, label)``); we keep that sum per sequence, in the same
    order, and average it over the batch. The fused variants use the tutorial's plain
    ``CrossEntropyLoss`` over all characters. A classifier's logits (B, V) score one
    label per sequence: cross-entropy averaged over the sequences.
    """
    if targets.dim() == 1:
        return nn.functional.cross_entropy(logits, targets), "sequences"
    if architecture == "rnn_cell":
        batch = logits.size(0)
        loss = torch.zeros((), device=logits.device)
        for t in range(logits.size(1)):
            step = nn.functional.cross_entropy(
                logits[:, t], targets[:, t], ignore_index=IGNORE_INDEX, reduction="sum"
            )
            loss = loss + step / batch
        return loss, "sequences"
    flat_logits = logits.reshape(-1, logits.size(-1))  # (B*T, V)
    return nn.functional.cross_entropy(flat_logits, targets.reshape(-1)), "characters"


def require_finite(quantity: str, value: float, epoch: int) -> None:
    """Stop at a loss that is NaN or infinite: one more step would spread it into every
    weight, and nothing trained from there can be saved, resumed or served."""
    if not math.isfinite(value):
        raise TrainingDivergedError(quantity, value, epoch)


# --- the session --------------------------------------------------------------------------


def make_optimizer(hp: Hyperparameters, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    return torch.optim.SGD(
        params, lr=hp.learning_rate, momentum=hp.momentum, weight_decay=hp.weight_decay
    )


def copy_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    # copied: on the CPU, .cpu() would hand back the live parameters themselves
    return {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}


def require_validation(hp: Hyperparameters, val_examples: ExampleSet | None, total: int) -> None:
    """Early stopping and the plateau schedule need held-out examples to judge by."""
    needs = hp.early_stopping_patience is not None or hp.lr_schedule == "plateau"
    if needs and val_examples is None:
        raise ConfigurationError(
            f"hyperparameters.validation_fraction {hp.validation_fraction} of {total} "
            "examples holds none out, and early_stopping_patience or lr_schedule 'plateau' "
            "judge by the validation loss: raise validation_fraction or give more data"
        )


@dataclass
class TrainingSession:
    hyperparameters: Hyperparameters
    config: ModelConfig
    dataset: Dataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    seed: int
    shuffle: torch.Generator  # orders the examples of each epoch
    train_examples: ExampleSet
    val_examples: ExampleSet | None
    epoch: int = 0  # epochs completed
    history: list[EpochMetrics] = field(default_factory=list)
    step: int = 0  # optimizer steps taken, in all
    trained_seconds: float = 0.0  # in train(), over every attempt (max_seconds)
    # the unfinished epoch: batches done, their sums, its time, and the shuffle state
    # its order was drawn from (what a mid-epoch checkpoint saves to draw it again)
    batch_in_epoch: int = 0
    tally: Tally | None = None
    epoch_seconds: float = 0.0
    epoch_shuffle_state: torch.Tensor | None = None
    watch: ValidationWatch = field(default_factory=ValidationWatch)
    best_weights: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None
    stop_reason: StopReason | None = None

    @classmethod
    def start(cls, hp: Hyperparameters, dataset: Dataset, device: torch.device) -> TrainingSession:
        seed = hp.seed if hp.seed is not None else random.SystemRandom().randrange(2**63)
        torch.manual_seed(seed)  # model initialisation and dropout draw from the global RNG
        config = ModelConfig.from_hyperparameters(hp, dataset.vocab)
        model = build_model(config).to(device)
        train_examples, val_examples = split(dataset.examples, hp.validation_fraction, seed)
        require_validation(hp, val_examples, len(dataset.examples))
        return cls(
            hyperparameters=hp,
            config=config,
            dataset=dataset,
            model=model,
            optimizer=make_optimizer(hp, model),
            device=device,
            seed=seed,
            shuffle=torch.Generator().manual_seed(seed),
            train_examples=train_examples,
            val_examples=val_examples,
        )

    @classmethod
    def resume(
        cls, checkpoint: Checkpoint, dataset: Dataset, device: torch.device
    ) -> TrainingSession:
        """Continue from ``checkpoint`` as if training had never stopped."""
        state = checkpoint.require_training_state()
        session = cls.start(
            checkpoint.hyperparameters.model_copy(update={"seed": state.seed}), dataset, device
        )
        session.model.load_state_dict(checkpoint.weights)
        session.optimizer.load_state_dict(state.optimizer_state_dict())
        torch.set_rng_state(state.cpu_rng)
        if state.cuda_rng and device.type == "cuda":
            torch.cuda.set_rng_state_all(state.cuda_rng)
        session.shuffle.set_state(state.shuffle_rng)
        session.epoch = checkpoint.epoch
        session.history = list(checkpoint.history)
        session._resume_loop(state.loop, checkpoint, state.best_weights)
        return session

    def _resume_loop(
        self,
        loop: LoopPosition,
        checkpoint: Checkpoint,
        best_weights: dict[str, torch.Tensor] | None,
    ) -> None:
        self.step, self.trained_seconds = loop.step, loop.trained_seconds
        self.batch_in_epoch, self.epoch_seconds = loop.batch_in_epoch, loop.epoch_seconds
        if loop.tally is not None:
            self.tally = Tally.restore(loop.tally, self.device)
        self.watch = loop.watch.model_copy()
        self.best_epoch, self.stop_reason = checkpoint.best_epoch, checkpoint.stop_reason
        self.best_weights = best_weights
        if best_weights is None and self.history:  # format 1: taken at an epoch's end
            self.step = self.epoch * self.batches_per_epoch  # every epoch was whole
            self.trained_seconds = sum(m.seconds for m in self.history)
            last = self.history[-1]
            self.best_weights, self.best_epoch = copy_weights(self.model), last.epoch
            if last.val_loss is not None:
                self.watch = ValidationWatch(best_loss=last.val_loss, best_epoch=last.epoch)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_examples) / self.hyperparameters.batch_size)

    def checkpoint(self, *, with_training_state: bool = True) -> Checkpoint:
        """The session now; without training state, a version: the best weights."""
        training = None
        if with_training_state:
            training = TrainingState.capture(
                self.seed,
                self.optimizer,
                self._shuffle_state_to_save(),
                self.device,
                self._loop_position(),
                self.best_weights,
            )
        weights = copy_weights(self.model)
        if not with_training_state and self.best_weights is not None:
            weights = self.best_weights
        return Checkpoint(
            config=self.config,
            hyperparameters=self.hyperparameters.model_copy(update={"seed": self.seed}),
            vocab=self.dataset.vocab,
            task=self.dataset.task,
            epoch=self.epoch,
            history=list(self.history),
            weights=weights,
            training=training,
            best_epoch=self.best_epoch,
            stop_reason=self.stop_reason,
        )

    def _shuffle_state_to_save(self) -> torch.Tensor:
        if self.batch_in_epoch > 0 and self.epoch_shuffle_state is not None:
            return self.epoch_shuffle_state  # the epoch's order is drawn again from it
        return self.shuffle.get_state()

    def _loop_position(self) -> LoopPosition:
        mid_epoch = self.batch_in_epoch > 0 and self.tally is not None
        return LoopPosition(
            step=self.step,
            batch_in_epoch=self.batch_in_epoch if mid_epoch else 0,
            trained_seconds=self.trained_seconds,
            epoch_seconds=self.epoch_seconds if mid_epoch else 0.0,
            tally=self.tally.sums() if mid_epoch and self.tally is not None else None,
            watch=self.watch.model_copy(),
        )

    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


# --- the loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOutcome:
    status: Literal["completed", "cancelled"]
    epochs_completed: int
    stop_reason: StopReason | None = None  # why a completed run ended


EpochCallback = Callable[[TrainingSession, EpochMetrics], None]
ProgressCallback = Callable[[TrainingSession, StepProgress], None]


@dataclass
class Clock:
    """Training time over every attempt: what max_seconds and progress reports count."""

    session: TrainingSession
    since: float = field(default_factory=time.perf_counter)

    def tick(self) -> float:
        """Add the time since the last tick to the session's; the time now."""
        now = time.perf_counter()
        self.session.trained_seconds += now - self.since
        self.since = now
        return now


@dataclass
class Reporter:
    """Calls ``on_progress`` every ``every_steps`` steps or ``every_seconds`` seconds."""

    session: TrainingSession
    on_progress: ProgressCallback | None
    every_steps: int | None
    every_seconds: float | None
    last_time: float = field(default_factory=time.perf_counter)
    last_step: int = 0
    last_loss: float = 0.0  # the tally's sums at the last report
    last_chars: int = 0

    def due(self, now: float) -> bool:
        if self.on_progress is None:
            return False
        steps = self.session.step - self.last_step
        by_steps = self.every_steps is not None and steps >= self.every_steps
        by_time = self.every_seconds is not None and now - self.last_time >= self.every_seconds
        return by_steps or by_time

    def report(self, now: float, tally: Tally) -> None:
        session = self.session
        if self.on_progress is None:
            return
        loss_sum, chars = float(tally.loss), tally.chars
        recent = (loss_sum - self.last_loss) / max(chars - self.last_chars, 1)
        require_finite("loss", recent, session.epoch + 1)
        progress = StepProgress(
            step=session.step,
            epoch=session.epoch + 1,
            batch=session.batch_in_epoch,
            batches=session.batches_per_epoch,
            epoch_fraction=session.batch_in_epoch / max(session.batches_per_epoch, 1),
            loss=recent,
            bits_per_char=bits(recent) if session.dataset.task == "text" else None,
            learning_rate=session.learning_rate(),
            chars_per_second=(chars - self.last_chars) / max(now - self.last_time, 1e-9),
            seconds=session.epoch_seconds,
        )
        self.on_progress(session, progress)
        self.restart(tally)

    def restart(self, tally: Tally | None) -> None:
        self.last_time, self.last_step = time.perf_counter(), self.session.step
        self.last_loss = float(tally.loss) if tally is not None else 0.0
        self.last_chars = tally.chars if tally is not None else 0


def train(
    session: TrainingSession,
    *,
    on_epoch_end: EpochCallback | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress_seconds: float | None = None,
) -> TrainingOutcome:
    """Train until the epochs, a budget or early stopping end it; ``should_stop`` is asked
    before every step.

    ``on_progress`` is called within an epoch every ``checkpoint_every_steps`` steps
    or ``progress_seconds`` seconds, whichever comes first. A cancelled run keeps
    only what the caller checkpointed in a callback.
    """
    hp = session.hyperparameters
    clock = Clock(session)
    reporter = Reporter(session, on_progress, hp.checkpoint_every_steps, progress_seconds)
    while (reason := stop_reason_now(session, clock)) is None:
        reporter.restart(session.tally)
        tally = run_epoch(session, should_stop, clock, reporter)
        if tally is None:
            return TrainingOutcome("cancelled", session.epoch)
        end_epoch(session, tally, clock, on_epoch_end)
    session.stop_reason = reason
    return TrainingOutcome("completed", session.epoch, reason)


def stop_reason_now(session: TrainingSession, clock: Clock) -> StopReason | None:
    """Why training must not take another step, if it must not."""
    hp = session.hyperparameters
    if session.stop_reason is not None:  # resumed from the checkpoint of its last epoch
        return session.stop_reason
    if session.epoch >= hp.epochs:
        return "completed"
    if session.watch.patience_run_out(hp):
        return "early_stopping"
    return budget_spent(session, clock)


def budget_spent(session: TrainingSession, clock: Clock) -> StopReason | None:
    hp = session.hyperparameters
    if hp.max_steps is not None and session.step >= hp.max_steps:
        return "max_steps"
    clock.tick()
    if hp.max_seconds is not None and session.trained_seconds >= hp.max_seconds:
        return "max_seconds"
    return None


def run_epoch(
    session: TrainingSession, should_stop: Callable[[], bool], clock: Clock, reporter: Reporter
) -> Tally | None:
    """The rest of the current epoch, or until a budget is spent; None when stopped.

    The order is drawn from the shuffle generator's state at the epoch's start, so an
    epoch resumed midway draws the same order and skips the batches already done.
    """
    hp, model, optimizer = session.hyperparameters, session.model, session.optimizer
    examples = session.train_examples
    planned = planned_steps(hp, session.batches_per_epoch)
    model.train()
    tally = session.tally or Tally(loss=torch.zeros((), device=session.device))
    session.tally = tally
    session.epoch_shuffle_state = session.shuffle.get_state()
    order = torch.randperm(len(examples), generator=session.shuffle)
    remaining = order[session.batch_in_epoch * hp.batch_size :]  # a batch is a slice of it
    for batch in batches(examples, remaining, hp.batch_size):
        if should_stop():
            return None
        if hp.lr_schedule != "constant":
            lr = learning_rate_at(hp, session.step, planned, session.watch.lr_scale)
            for group in optimizer.param_groups:
                group["lr"] = lr
        started = time.perf_counter()
        train_step(session, batch, tally)
        now = clock.tick()
        session.epoch_seconds += now - started  # the steps' time, as an epoch reports it
        if session.batch_in_epoch < session.batches_per_epoch:
            if reporter.due(now):
                reporter.report(now, tally)
            if budget_spent(session, clock) is not None:
                break  # the epoch ends early, and is validated like any other
    return tally


def train_step(session: TrainingSession, batch: Batch, tally: Tally) -> None:
    hp, model, optimizer = session.hyperparameters, session.model, session.optimizer
    batch = batch.to(session.device)
    optimizer.zero_grad(set_to_none=True)
    logits, _ = model(batch.inputs, batch.lengths)  # (B, T, V)
    loss, per = sequence_loss(session.config.architecture, logits, batch.targets)
    if session.device.type == "cpu":  # free here; elsewhere it would wait for the device
        require_finite("loss", loss.item(), session.epoch + 1)
    loss.backward()  # type: ignore[no-untyped-call]
    if hp.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
    optimizer.step()
    weight = batch.inputs.size(0) if per == "sequences" else int(batch.lengths.sum())
    tally.add(loss, logits.detach(), batch, weight)
    session.step += 1
    session.batch_in_epoch += 1


def end_epoch(
    session: TrainingSession, tally: Tally, clock: Clock, on_epoch_end: EpochCallback | None
) -> None:
    """Score the epoch, keep its weights if they are the best, and decide what follows."""
    epoch = session.epoch + 1
    metrics = epoch_metrics(session, epoch, tally, session.epoch_seconds)
    session.epoch, session.batch_in_epoch, session.tally = epoch, 0, None
    session.epoch_seconds = 0.0
    session.history.append(metrics)
    keep_if_best(session, metrics)
    clock.tick()  # validation counts towards max_seconds
    reason = stop_reason_now(session, clock)
    if reason is not None:  # known before the callback, so its checkpoint says so
        session.stop_reason = reason
    if on_epoch_end is not None:
        on_epoch_end(session, metrics)
    clock.tick()


def keep_if_best(session: TrainingSession, metrics: EpochMetrics) -> None:
    """The best weights by validation loss; without validation data, the last."""
    hp = session.hyperparameters
    if metrics.val_loss is None or session.watch.observe(hp, metrics.epoch, metrics.val_loss):
        session.best_weights = copy_weights(session.model)
        session.best_epoch = metrics.epoch
    if hp.lr_schedule == "plateau":
        for group in session.optimizer.param_groups:
            group["lr"] = hp.learning_rate * session.watch.lr_scale


@torch.inference_mode()
def evaluate(session: TrainingSession, examples: ExampleSet) -> Tally:
    session.model.eval()
    tally = Tally(loss=torch.zeros((), device=session.device))
    order = torch.arange(len(examples))
    for batch in batches(examples, order, session.hyperparameters.batch_size):
        batch = batch.to(session.device)
        logits, _ = session.model(batch.inputs, batch.lengths)
        loss, per = sequence_loss(session.config.architecture, logits, batch.targets)
        weight = batch.inputs.size(0) if per == "sequences" else int(batch.lengths.sum())
        tally.add(loss, logits, batch, weight)
    return tally


@torch.inference_mode()
def predict_sample(session: TrainingSession) -> tuple[str, str]:
    """The first training example and what the model now makes of it (for a classifier:
    its label)."""
    text, ids = session.train_examples.sample(0)
    ids = ids.to(session.device)
    session.model.eval()
    logits, _ = session.model(ids)
    labels = session.dataset.vocab.labels
    if labels is not None:  # logits (1, V_labels)
        return text, labels[int(logits[0].argmax())]
    return text, session.dataset.vocab.decode_output(logits[0].argmax(-1).tolist())


def epoch_metrics(
    session: TrainingSession, epoch: int, tally: Tally, seconds: float
) -> EpochMetrics:
    loss, char_acc, seq_acc = tally.summary()
    # a GPU's steps are checked here: NaN and infinity survive the tally's running sum
    require_finite("loss", loss, epoch)
    val, val_tally = None, None
    if session.val_examples is not None:
        val_tally = evaluate(session, session.val_examples)
        val = val_tally.summary()
        require_finite("validation loss", val[0], epoch)
    sample_input, sample_prediction = predict_sample(session)
    text = session.dataset.task == "text"
    return EpochMetrics(
        epoch=epoch,
        loss=loss,
        train_char_accuracy=char_acc,
        train_seq_accuracy=seq_acc,
        val_loss=val[0] if val else None,
        val_char_accuracy=val[1] if val else None,
        val_seq_accuracy=val[2] if val else None,
        sample_input=sample_input,
        sample_prediction=sample_prediction,
        seconds=seconds,
        characters=tally.chars,
        bits_per_char=bits(tally.nats_per_char) if text else None,
        val_bits_per_char=bits(val_tally.nats_per_char) if text and val_tally else None,
        learning_rate=session.learning_rate(),
        steps=session.step,
    )


# --- what a job costs -----------------------------------------------------------------------

# Calibrated with one torch thread on a shared 2-core x86 CPU (December 2026): an epoch's
# training and validation take about 1.2e-10 s per parameter per character (GRUs of 64 to
# 512 units, 2,000 to 172,000 characters: 1.1e-10 on the idle machine, up to 1.8e-10
# under load), that work shared among the job's torch threads, plus 1e-4 s per time step
# of each batch and layer, which the recurrence runs one after the other whatever the
# model's size or threads (what small models cost). Around each epoch the job validates,
# predicts a sample and writes its checkpoint (weights and optimizer state, 12 bytes a
# parameter) and the registry's rows: 0.05 s, and 1.2e-7 s a parameter. Through the
# service, a default text job over 170 KB (20 epochs, 2 threads) took 58 s: estimated 67.
# Before the first, a worker starts: a new process imports torch and encodes the data,
# 2 to 3 s on an idle machine. A machine busy with other work is slower in proportion:
# 3 to 4 times at a load of 8 on 2 cores.
SECONDS_TO_START = 3.0
SECONDS_PER_PARAMETER_CHARACTER = 1.2e-10
SECONDS_PER_TIME_STEP = 1e-4
SECONDS_AROUND_EACH_EPOCH = 0.05
SECONDS_AROUND_EACH_EPOCH_PER_PARAMETER = 1.2e-7


def estimate_seconds(
    hp: Hyperparameters, config: ModelConfig, parameters: int, examples: ExampleSet, threads: int
) -> float:
    """How long a job training ``examples`` with ``threads`` torch threads takes on the
    CPU above, its budgets (max_steps, max_seconds) counted: an estimate, within a factor
    of about two there when idle; a GPU or a faster CPU go faster, a busy machine slower.
    Early stopping cannot be foreseen: the estimate is for all the epochs."""
    batches = math.ceil(len(examples) / hp.batch_size) + 1  # the validation split's last
    time_steps = batches * examples.width * config.num_layers
    epoch = (
        SECONDS_PER_PARAMETER_CHARACTER * parameters * examples.characters / threads
        + SECONDS_PER_TIME_STEP * time_steps
        + SECONDS_AROUND_EACH_EPOCH
        + SECONDS_AROUND_EACH_EPOCH_PER_PARAMETER * parameters
    )
    epochs: float = hp.epochs
    if hp.max_steps is not None:  # a budget of steps may end it sooner
        epochs = min(epochs, hp.max_steps / max(batches - 1, 1))
    seconds = epoch * epochs
    if hp.max_seconds is not None:  # and one of time, the last epoch's validation past it
        seconds = min(seconds, hp.max_seconds + epoch)
    return SECONDS_TO_START + seconds
