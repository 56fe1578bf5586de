"""Training: a plain function over a session, reporting through callbacks.

    session = TrainingSession.start(hyperparameters, dataset, device)
    outcome = train(session, on_epoch_end=save_and_report, should_stop=cancelled)

The session holds everything that changes while training (model, optimizer, epoch,
history and every random generator), so ``session.checkpoint()`` taken after any
epoch resumes, through ``TrainingSession.resume``, exactly as if it never stopped.
The loop knows nothing of where checkpoints go or who listens; minGPT's trainer
is the model. A loss that becomes NaN or infinite ends training with
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

from app.ml.checkpoint import Checkpoint, TrainingState
from app.ml.data import IGNORE_INDEX, Batch, Dataset, ExampleSet, batches, split
from app.ml.errors import TrainingDivergedError
from app.ml.hyperparameters import Hyperparameters
from app.ml.metrics import EpochMetrics
from app.ml.model import ModelConfig, build_model

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

    @classmethod
    def start(cls, hp: Hyperparameters, dataset: Dataset, device: torch.device) -> TrainingSession:
        seed = hp.seed if hp.seed is not None else random.SystemRandom().randrange(2**63)
        torch.manual_seed(seed)  # model initialisation and dropout draw from the global RNG
        config = ModelConfig.from_hyperparameters(hp, dataset.vocab)
        model = build_model(config).to(device)
        train_examples, val_examples = split(dataset.examples, hp.validation_fraction, seed)
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
        return session

    def checkpoint(self, *, with_training_state: bool = True) -> Checkpoint:
        training = None
        if with_training_state:
            training = TrainingState.capture(self.seed, self.optimizer, self.shuffle, self.device)
        return Checkpoint(
            config=self.config,
            hyperparameters=self.hyperparameters.model_copy(update={"seed": self.seed}),
            vocab=self.dataset.vocab,
            task=self.dataset.task,
            epoch=self.epoch,
            history=list(self.history),
            # copied: on the CPU, .cpu() would hand back the live parameters themselves
            weights={k: v.to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            training=training,
        )


# --- the loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOutcome:
    status: Literal["completed", "cancelled"]
    epochs_completed: int


EpochCallback = Callable[[TrainingSession, EpochMetrics], None]


def train(
    session: TrainingSession,
    *,
    on_epoch_end: EpochCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainingOutcome:
    """Train until ``hyperparameters.epochs``; ``should_stop`` is asked before every step.

    A cancelled epoch is abandoned: the session keeps the state of the last full epoch
    only if the caller checkpointed it in ``on_epoch_end``.
    """
    hp = session.hyperparameters
    for epoch in range(session.epoch + 1, hp.epochs + 1):
        started = time.perf_counter()
        tally = run_epoch(session, should_stop)
        if tally is None:
            return TrainingOutcome("cancelled", session.epoch)
        metrics = epoch_metrics(session, epoch, tally, time.perf_counter() - started)
        session.epoch = epoch
        session.history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(session, metrics)
    return TrainingOutcome("completed", session.epoch)


def run_epoch(session: TrainingSession, should_stop: Callable[[], bool]) -> Tally | None:
    """One pass over the shuffled training examples; None when stopped midway."""
    hp, model, optimizer = session.hyperparameters, session.model, session.optimizer
    examples = session.train_examples
    model.train()
    tally = Tally(loss=torch.zeros((), device=session.device))
    order = torch.randperm(len(examples), generator=session.shuffle)
    for batch in batches(examples, order, hp.batch_size):
        if should_stop():
            return None
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
    return tally


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
    val = None
    if session.val_examples is not None:
        val = evaluate(session, session.val_examples).summary()
        require_finite("validation loss", val[0], epoch)
    sample_input, sample_prediction = predict_sample(session)
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
    CPU above: an estimate, within a factor of about two there when idle; a GPU or a
    faster CPU go faster, a busy machine slower."""
    batches = math.ceil(len(examples) / hp.batch_size) + 1  # the validation split's last
    time_steps = batches * examples.width * config.num_layers
    epoch = (
        SECONDS_PER_PARAMETER_CHARACTER * parameters * examples.characters / threads
        + SECONDS_PER_TIME_STEP * time_steps
        + SECONDS_AROUND_EACH_EPOCH
        + SECONDS_AROUND_EACH_EPOCH_PER_PARAMETER * parameters
    )
    return SECONDS_TO_START + epoch * hp.epochs
