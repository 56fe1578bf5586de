"""Scoring a model: the numbers training records for its held-out split, computed again."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from app.ml.data import IGNORE_INDEX, Batch, batches, pairs_dataset, split, text_dataset
from app.ml.evaluate import SCORERS, Totals, evaluate, loss_per, score_positions
from app.ml.hyperparameters import Hyperparameters
from app.ml.model import ModelConfig, build_model
from app.ml.train import TrainingSession, train
from app.ml.vocab import Vocab

CPU = torch.device("cpu")
FOX = "the quick brown fox jumps over the lazy dog. " * 12
WORDS = ["abc", "bcad", "cabd", "dabca", "ab", "bca", "cdab", "abcd", "dcba", "bb", "acd", "dd"]
PAIRS = [(w, w[::-1]) for w in WORDS]


def trained(hp: Hyperparameters, dataset_text: str | None = None) -> TrainingSession:
    if dataset_text is None:
        dataset = pairs_dataset(PAIRS)
    else:
        dataset = text_dataset(dataset_text, hp.seq_len)
    session = TrainingSession.start(hp, dataset, CPU)
    train(session)
    return session


@pytest.mark.parametrize(
    ("hp", "text"),
    [
        (Hyperparameters(architecture="embedding_rnn", epochs=3, seed=1, seq_len=16), FOX),
        (Hyperparameters(architecture="rnn_cell", epochs=3, seed=2, seq_len=16), FOX),
        (Hyperparameters(architecture="embedding_rnn", epochs=3, seed=3, batch_size=4), None),
        (Hyperparameters(architecture="rnn", epochs=3, seed=4, batch_size=5), None),
        (
            Hyperparameters(architecture="embedding_rnn", bidirectional=True, epochs=3, seed=5),
            None,
        ),
    ],
    ids=["text", "text-rnn_cell", "pairs", "pairs-rnn", "pairs-bidirectional"],
)
def test_the_held_out_split_scores_the_validation_loss_training_recorded(
    hp: Hyperparameters, text: str | None
) -> None:
    hp = hp.model_copy(update={"validation_fraction": 0.25})
    session = trained(hp, text)
    assert session.val_examples is not None
    last = session.history[-1]
    # a batch size of its own: each row starts from a fresh state, so it changes nothing
    score = evaluate(
        session.model,
        session.dataset.task,
        hp.architecture,
        session.val_examples,
        batch_size=3,
    )
    assert score.loss == pytest.approx(last.val_loss, abs=1e-4)
    assert score.char_accuracy == pytest.approx(last.val_char_accuracy, abs=1e-9)
    assert score.seq_accuracy == pytest.approx(last.val_seq_accuracy, abs=1e-9)
    assert score.totals.targets == session.val_examples.characters
    assert score.totals.sequences == len(session.val_examples)


def test_rnn_cell_reports_its_loss_per_sequence_and_its_nll_per_character() -> None:
    session = trained(Hyperparameters(architecture="rnn_cell", epochs=2, seed=0), None)
    score = evaluate(session.model, "pairs", "rnn_cell", session.train_examples, batch_size=64)
    assert score.loss_per == "sequences"
    assert score.loss == pytest.approx(score.totals.nll / len(session.train_examples))
    assert score.nll == pytest.approx(score.totals.nll / session.train_examples.characters)
    assert score.bits_per_character == pytest.approx(score.nll / math.log(2))


def test_padding_is_never_scored() -> None:
    """Two rows, the second padded: the padded position adds neither NLL nor a target."""
    config = ModelConfig(
        architecture="embedding_rnn",
        cell="gru",
        input_size=3,
        output_size=3,
        embedding_size=4,
        hidden_size=5,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    dataset = pairs_dataset([("abc", "cba"), ("ab", "ba")], Vocab.from_pairs(["abc"], ["abc"]))
    totals = Totals()
    (batch,) = batches(dataset.examples, torch.arange(2), 2)
    with torch.inference_mode():
        score_positions(model, batch, totals)
        logits, _ = model(batch.inputs, batch.lengths)
    expected = functional.cross_entropy(
        logits.reshape(-1, 3), batch.targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    assert totals.targets == 5
    assert totals.sequences == 2
    assert totals.nll == pytest.approx(float(expected), abs=1e-5)


def test_sums_stay_exact_in_float64_over_many_characters() -> None:
    """A long corpus: the float64 sum agrees with an exact one where float32 would drift."""
    text_model = trained(
        Hyperparameters(architecture="embedding_rnn", epochs=1, seed=0, seq_len=64),
        "abcd" * 50,
    )
    examples, _ = split(text_dataset("abcd" * 20_000, 64, text_model.dataset.vocab).examples, 0, 0)
    score = evaluate(text_model.model, "text", "embedding_rnn", examples, batch_size=256)
    per_batch = []
    with torch.inference_mode():
        for start in range(0, len(examples), 256):
            chunk = examples.subset(torch.arange(start, min(start + 256, len(examples))))
            logits, _ = text_model.model(chunk.inputs, chunk.lengths)
            nll = functional.cross_entropy(logits.transpose(1, 2), chunk.targets, reduction="none")
            per_batch.append(math.fsum(nll.double().flatten().tolist()))
    assert score.totals.targets == 80_000 - 1
    assert score.totals.nll == pytest.approx(math.fsum(per_batch), rel=1e-12)


def test_an_unknown_task_is_refused() -> None:
    session = trained(Hyperparameters(architecture="embedding_rnn", epochs=1, seed=0), None)
    with pytest.raises(ValueError, match="no scorer for task 'tagging'"):
        evaluate(session.model, "tagging", "embedding_rnn", session.train_examples, batch_size=4)


class LastStateClassifier(torch.nn.Module):
    """A classifier's shape, in plain PyTorch: ids (B, T) -> label logits (B, V_labels)."""

    def __init__(self, characters: int, labels: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(characters, 6)
        self.rnn = torch.nn.GRU(6, 8, batch_first=True)
        self.head = torch.nn.Linear(8, labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, None]:
        out, _ = self.rnn(self.embedding(ids))  # (B, T, H)
        last = out[torch.arange(ids.size(0)), lengths - 1]  # (B, H): each row's own end
        return self.head(last), None


def test_a_classifier_is_scored_once_per_sequence() -> None:
    torch.manual_seed(0)
    model = LastStateClassifier(characters=4, labels=3).eval()
    inputs = torch.tensor([[0, 1, 2], [3, 2, 0], [1, 0, 0]])
    lengths = torch.tensor([3, 2, 1])
    labels = torch.tensor([2, 0, 1])  # (N,): one label per sequence
    batch = Batch(inputs, labels, lengths)
    with torch.inference_mode():
        logits, _ = model(inputs, lengths)
    totals = Totals()

    with torch.inference_mode():
        SCORERS["classify"](model, batch, totals)

    expected = functional.cross_entropy(logits, labels, reduction="sum")
    right = int((logits.argmax(-1) == labels).sum())
    assert totals.nll == pytest.approx(float(expected), abs=1e-6)
    assert (totals.targets, totals.sequences) == (3, 3)
    assert totals.correct_targets == totals.correct_sequences == right
    assert loss_per("classify", "embedding_rnn") == "sequences"
