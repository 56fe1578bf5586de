"""Sequence classification in the engine: data, the classifier, training and prediction.

The task is the classic one that needs a recurrence: is a binary number divisible by
3? The answer turns on every bit and its position (the remainder is a three-state
automaton), so neither the majority class nor a bag of characters can learn it; a
small GRU reading the bits in order must do clearly better on numbers it never saw.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from app.ml.checkpoint import META_FILE, load_checkpoint, save_checkpoint
from app.ml.data import batches, classify_dataset, split
from app.ml.errors import CheckpointError, ConfigurationError, DataError
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Predictor
from app.ml.model import ModelConfig, SequenceClassifier, build_model, expected_shapes
from app.ml.train import TrainingSession, sequence_loss, train
from app.ml.vocab import Vocab

CPU = torch.device("cpu")
Pairs = list[tuple[str, str]]


def divisible_by_three(count: int, seed: int) -> Pairs:
    """Binary numbers of 6 to 12 bits, labelled by whether 3 divides them."""
    rng = random.Random(seed)
    numbers = [rng.getrandbits(rng.randint(6, 12)) | 1 << 5 for _ in range(count)]
    return [(f"{n:b}", "yes" if n % 3 == 0 else "no") for n in numbers]


def majority_accuracy(train: Pairs, test: Pairs) -> float:
    majority = Counter(label for _, label in train).most_common(1)[0][0]
    return sum(label == majority for _, label in test) / len(test)


def naive_bayes_accuracy(train: Pairs, test: Pairs) -> float:
    """A bag-of-characters naive Bayes classifier (add-one smoothing), as baselines go."""
    labels = sorted({label for _, label in train})
    prior = Counter(label for _, label in train)
    counts = {label: Counter() for label in labels}  # type: ignore[var-annotated]
    for text, label in train:
        counts[label].update(text)
    chars = {c for text, _ in train for c in text}

    def score(text: str, label: str) -> float:
        total = sum(counts[label].values()) + len(chars)
        likelihood = sum(math.log((counts[label][c] + 1) / total) for c in text)
        return math.log(prior[label]) + likelihood

    hits = sum(max(labels, key=lambda lab: score(text, lab)) == label for text, label in test)
    return hits / len(test)


def classifier_hyperparameters(**overrides: object) -> Hyperparameters:
    values: dict[str, object] = {
        "cell": "gru",
        "embedding_size": 4,
        "hidden_size": 16,
        "num_layers": 1,
        "learning_rate": 0.02,
        "epochs": 15,
        "batch_size": 32,
        "validation_fraction": 0.0,
        "seed": 0,
    }
    return Hyperparameters.model_validate({**values, **overrides})


def accuracy(predictor: Predictor, test: Pairs) -> float:
    predictions = predictor.predict([text for text, _ in test])
    return sum(p.output == label for p, (_, label) in zip(predictions, test, strict=True)) / len(
        test
    )


@pytest.fixture(scope="module")
def divisibility() -> tuple[Pairs, Pairs, TrainingSession]:
    train_pairs, test_pairs = divisible_by_three(1500, seed=1), divisible_by_three(400, seed=2)
    session = TrainingSession.start(
        classifier_hyperparameters(), classify_dataset(train_pairs), CPU
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small net: more threads only wait for each other
    try:
        train(session)
    finally:
        torch.set_num_threads(threads)
    return train_pairs, test_pairs, session


# --- data -----------------------------------------------------------------------------------


def test_labels_are_inferred_sorted_and_targets_hold_one_label_id_per_sequence() -> None:
    dataset = classify_dataset(
        [("Nakamura", "Japanese"), ("Smith", "English"), ("Sato", "Japanese")]
    )
    assert dataset.task == "classify"
    assert dataset.vocab.labels == ["English", "Japanese"]
    assert dataset.vocab.output is None  # labels are not characters
    assert dataset.examples.targets.tolist() == [1, 0, 1]  # (N,)
    assert dataset.examples.lengths.tolist() == [8, 5, 4]
    batch = next(batches(dataset.examples, torch.tensor([1, 2]), 2))
    assert batch.targets.tolist() == [0, 1]
    assert batch.inputs.shape == (2, 5)  # trimmed to its longest row, labels untouched


def test_a_vocabulary_has_output_characters_or_labels_and_writes_only_that_one() -> None:
    assert Vocab(input=["a"], output=["b"]).model_dump() == {"input": ["a"], "output": ["b"]}
    assert Vocab(input=["a"], labels=["x"]).model_dump() == {"input": ["a"], "labels": ["x"]}
    for neither_or_both in ({}, {"output": ["b"], "labels": ["x"]}):
        with pytest.raises(ValueError, match="give either output .* or labels"):
            Vocab.model_validate({"input": ["a"], **neither_or_both})


def test_a_given_vocabulary_fixes_the_labels_and_refuses_others() -> None:
    vocab = Vocab(input=list("abc"), labels=["x", "y", "z"])
    assert classify_dataset([("ab", "z")], vocab).examples.targets.tolist() == [2]
    with pytest.raises(DataError, match=r"pairs\[1\].label: label 'w' is not one of vocab.labels"):
        classify_dataset([("ab", "z"), ("c", "w")], vocab)


@pytest.mark.parametrize(
    ("label", "problem"),
    [("", "has 0 characters"), ("x" * 65, "has 65 characters"), ("a\tb", "control characters")],
)
def test_bad_labels_are_refused_naming_the_pair(label: str, problem: str) -> None:
    with pytest.raises(DataError, match=rf"pairs\[1\].label: .*{problem}"):
        classify_dataset([("ab", "ok"), ("cd", label)])


def test_split_and_subset_keep_labels_with_their_sequences() -> None:
    dataset = classify_dataset(divisible_by_three(50, seed=3))
    train_part, held_out = split(dataset.examples, 0.2, seed=0)
    assert held_out is not None
    for part in (train_part, held_out):
        for text, target in zip(part.texts, part.targets.tolist(), strict=True):
            expected = "yes" if int(text, 2) % 3 == 0 else "no"
            assert dataset.vocab.labels is not None
            assert dataset.vocab.labels[target] == expected


# --- the model --------------------------------------------------------------------------------


def classifier_config(bidirectional: bool, cell: str = "gru") -> ModelConfig:
    hp = classifier_hyperparameters(cell=cell, bidirectional=bidirectional, num_layers=2)
    return ModelConfig.from_hyperparameters(hp, Vocab(input=list("01"), labels=["no", "yes"]))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_reaches_the_label(bidirectional: bool, cell: str) -> None:
    """A row scored in a padded batch gets the logits it gets alone: packing ends each
    direction at the row's own ends."""
    torch.manual_seed(0)
    model = build_model(classifier_config(bidirectional, cell)).eval()
    assert isinstance(model, SequenceClassifier)
    short, long = torch.tensor([[1, 0, 1]]), torch.tensor([[1, 1, 0, 0, 1, 0]])
    batch = torch.tensor([[1, 0, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0]])
    logits, _ = model(batch, torch.tensor([3, 6]))  # (B, V_labels)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits[0], model(short)[0][0])
    torch.testing.assert_close(logits[1], model(long)[0][0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_expected_shapes_are_the_classifiers_state_dict(bidirectional: bool) -> None:
    config = classifier_config(bidirectional)
    state = build_model(config).state_dict()
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == expected_shapes(config)


@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn"])
def test_one_hot_architectures_cannot_classify(architecture: str) -> None:
    vocab = Vocab(input=list("01"), labels=["no", "yes"])
    hp = Hyperparameters(architecture=architecture)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a classifier needs architecture 'embedding_rnn'"):
        ModelConfig.from_hyperparameters(hp, vocab)


def test_the_loss_is_cross_entropy_per_sequence() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    loss, per = sequence_loss("embedding_rnn", logits, targets)
    assert per == "sequences"
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, targets))


# --- learning ---------------------------------------------------------------------------------


def test_the_classifier_learns_divisibility_by_three_where_the_baselines_cannot(
    divisibility: tuple[Pairs, Pairs, TrainingSession],
) -> None:
    train_pairs, test_pairs, session = divisibility
    predictor = Predictor.from_checkpoint(session.checkpoint(with_training_state=False), CPU)
    majority, bag = (
        majority_accuracy(train_pairs, test_pairs),
        naive_bayes_accuracy(train_pairs, test_pairs),
    )
    model = accuracy(predictor, test_pairs)
    assert max(majority, bag) < 0.75  # the task needs the order of the bits
    assert model > 0.95, f"held-out accuracy {model:.3f}; majority {majority}, bag {bag:.3f}"


def test_metrics_count_sequences_and_the_sample_is_a_label(
    divisibility: tuple[Pairs, Pairs, TrainingSession],
) -> None:
    _, _, session = divisibility
    last = session.history[-1]
    assert last.train_char_accuracy == last.train_seq_accuracy  # both: labels right
    assert last.sample_input == session.train_examples.texts[0]
    assert last.sample_prediction in ("yes", "no")
    assert last.characters == session.train_examples.characters


def test_validation_scores_labels() -> None:
    hp = classifier_hyperparameters(epochs=1, validation_fraction=0.2)
    session = TrainingSession.start(hp, classify_dataset(divisible_by_three(100, seed=4)), CPU)
    train(session)
    metrics = session.history[-1]
    assert metrics.val_char_accuracy == metrics.val_seq_accuracy
    assert metrics.val_loss is not None


# --- predicting and the checkpoint ------------------------------------------------------------


def test_predictions_give_the_label_its_probability_and_the_top_k(
    divisibility: tuple[Pairs, Pairs, TrainingSession],
) -> None:
    _, _, session = divisibility
    predictor = Predictor.from_checkpoint(session.checkpoint(with_training_state=False), CPU)
    six, seven = predictor.predict(["110", "111"], top_k=2)  # 6 and 7
    assert (six.output, seven.output) == ("yes", "no")
    assert six.label is not None
    assert six.label.label == "yes"
    assert six.label.top_labels == ["yes", "no"]
    assert six.label.top_probabilities[0] == six.label.probability > 0.5
    assert sum(six.label.top_probabilities) == pytest.approx(1.0)
    assert predictor.predict(["110"])[0].label.top_labels == []  # type: ignore[union-attr]


def test_a_classifier_refuses_empty_inputs_and_generation(
    divisibility: tuple[Pairs, Pairs, TrainingSession],
) -> None:
    _, _, session = divisibility
    predictor = Predictor.from_checkpoint(session.checkpoint(with_training_state=False), CPU)
    with pytest.raises(DataError, match=r"inputs\[1\]: is empty"):
        predictor.predict(["1", ""])
    with pytest.raises(ConfigurationError, match="this model is a classifier"):
        predictor.generate("1", 5)


def test_a_classifier_checkpoint_round_trips(
    tmp_path: Path, divisibility: tuple[Pairs, Pairs, TrainingSession]
) -> None:
    _, test_pairs, session = divisibility
    save_checkpoint(session.checkpoint(), tmp_path / "v1")
    loaded = load_checkpoint(tmp_path / "v1")
    assert loaded.task == "classify"
    assert loaded.config.head == "sequence"
    assert loaded.vocab == session.dataset.vocab
    before = Predictor.from_checkpoint(session.checkpoint(), CPU).predict(["1001", "11"], top_k=2)
    after = Predictor.from_checkpoint(loaded, CPU).predict(["1001", "11"], top_k=2)
    assert before == after


@pytest.mark.parametrize(
    "edit",
    [
        lambda meta: meta.update(task="pairs"),
        lambda meta: meta["config"].pop("head"),
        lambda meta: meta["vocab"].update(output=["n", "y"], labels=None),
    ],
    ids=["task", "head", "vocab"],
)
def test_a_classifier_checkpoint_whose_task_head_and_labels_disagree_is_refused(
    tmp_path: Path, divisibility: tuple[Pairs, Pairs, TrainingSession], edit: Any
) -> None:
    _, _, session = divisibility
    save_checkpoint(session.checkpoint(with_training_state=False), tmp_path / "v1")
    meta_path = tmp_path / "v1" / META_FILE
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))

    with pytest.raises(CheckpointError, match="disagree: a classifier has task 'classify'"):
        load_checkpoint(tmp_path / "v1")
