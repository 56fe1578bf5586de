"""Inference: per-position predictions with their probabilities, and sampling new text."""

from __future__ import annotations

import pytest
import torch

from app.ml.checkpoint import Checkpoint
from app.ml.data import text_dataset
from app.ml.errors import ConfigurationError, UnknownCharactersError
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Prediction, Predictor
from app.ml.train import TrainingSession

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def hello(hello_checkpoint: Checkpoint) -> Predictor:
    return Predictor.from_checkpoint(hello_checkpoint, CPU)


@pytest.fixture(scope="module")
def writer(text_checkpoint: Checkpoint) -> Predictor:
    return Predictor.from_checkpoint(text_checkpoint, CPU)


# --- predict ------------------------------------------------------------------------------


def test_predict_maps_each_input_character_to_an_output_character(hello: Predictor) -> None:
    assert hello.predict(["hello"]) == [Prediction(output="ohlol")]


def test_inputs_of_different_lengths_are_predicted_together(hello: Predictor) -> None:
    whole, prefix, single = hello.predict(["hello", "hel", "h"])

    # a unidirectional model reads left to right: a prefix is predicted as in the whole
    assert (whole.output, prefix.output, single.output) == ("ohlol", "ohl", "o")


def test_top_k_lists_the_likeliest_characters_first(hello: Predictor) -> None:
    (prediction,) = hello.predict(["hello"], top_k=2)

    assert prediction.top_k is not None
    top = prediction.top_k
    for position, (characters, probabilities) in enumerate(
        zip(top.characters, top.probabilities, strict=True)
    ):
        assert len(characters) == len(probabilities) == 2
        assert probabilities[0] >= probabilities[1]
        assert characters[0] == prediction.output[position]


def test_probabilities_are_those_of_the_chosen_characters(hello: Predictor) -> None:
    (prediction,) = hello.predict(["hello"], top_k=3, probabilities=True)

    assert prediction.probabilities is not None
    assert prediction.top_k is not None
    for chosen, candidates in zip(
        prediction.probabilities, prediction.top_k.probabilities, strict=True
    ):
        assert chosen == candidates[0]
        assert sum(candidates) == pytest.approx(1.0, abs=1e-6)


def test_top_k_beyond_the_output_vocabulary_lists_all_of_it(hello: Predictor) -> None:
    (prediction,) = hello.predict(["he"], top_k=10)

    assert prediction.top_k is not None
    assert [sorted(cs) for cs in prediction.top_k.characters] == [["h", "l", "o"]] * 2


def test_an_empty_input_gives_an_empty_output(hello: Predictor) -> None:
    empty, full = hello.predict(["", "hello"], probabilities=True)

    assert empty == Prediction(output="", probabilities=[])
    assert full.output == "ohlol"


def test_unknown_input_characters_are_all_named(hello: Predictor) -> None:
    with pytest.raises(UnknownCharactersError) as caught:
        hello.predict(["hexlo", "zz"])

    assert [(u.input_index, u.position, u.character) for u in caught.value.unknown] == [
        (0, 2, "x"),
        (1, 0, "z"),
        (1, 1, "z"),
    ]
    assert "'x' at position 2 of inputs[0]" in str(caught.value)


# --- generate -----------------------------------------------------------------------------


def test_generation_continues_the_prompt(writer: Predictor) -> None:
    text = writer.generate("the ", 30, seed=1)

    assert text.startswith("the ")
    assert len(text) == 34
    assert set(text) <= set(writer.vocab.output)


def test_generation_with_a_seed_is_reproducible(writer: Predictor) -> None:
    assert writer.generate("the ", 30, seed=1) == writer.generate("the ", 30, seed=1)
    assert writer.generate("the ", 30, seed=1) != writer.generate("the ", 30, seed=2)


def test_generation_without_a_seed_leaves_the_global_generators_alone(writer: Predictor) -> None:
    state = torch.get_rng_state()

    writer.generate("the ", 5)

    assert torch.equal(torch.get_rng_state(), state)


def test_temperature_zero_always_takes_the_likeliest_character(writer: Predictor) -> None:
    greedy = writer.generate("the c", 10, temperature=0, seed=1)

    assert writer.generate("the c", 10, temperature=0, seed=2) == greedy
    assert greedy[5] == writer.predict(["the c"])[0].output[-1]


@pytest.mark.parametrize("temperature", [1e-300, 5e-324], ids=["tiny", "subnormal"])
def test_a_tiny_temperature_samples_the_likeliest_character(
    writer: Predictor, temperature: float
) -> None:
    greedy = writer.generate("the c", 10, temperature=0)

    assert writer.generate("the c", 10, temperature=temperature, seed=1) == greedy


@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn", "embedding_rnn"])
def test_generation_carries_the_state_as_if_rereading_the_whole_text(architecture: str) -> None:
    hp = Hyperparameters(architecture=architecture, cell="lstm", num_layers=1, seed=0)
    session = TrainingSession.start(hp, text_dataset("abcdabcabd", seq_len=4), CPU)
    predictor = Predictor.from_checkpoint(session.checkpoint(), CPU)  # untrained will do

    in_one_go = predictor.generate("ab", 6, temperature=0)
    in_two_goes = predictor.generate(predictor.generate("ab", 3, temperature=0), 3, temperature=0)

    assert in_two_goes == in_one_go


def test_a_pairs_model_refuses_to_generate(hello: Predictor) -> None:
    with pytest.raises(ConfigurationError, match="generation needs a model trained on text"):
        hello.generate("he", 3)


@pytest.mark.parametrize(
    ("prompt", "temperature", "message"),
    [("", 1.0, "prompt must hold at least one character"), ("the", -1.0, "temperature")],
    ids=["empty-prompt", "negative-temperature"],
)
def test_nonsense_generation_requests_are_refused(
    writer: Predictor, prompt: str, temperature: float, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        writer.generate(prompt, 3, temperature=temperature)


def test_a_prompt_outside_the_vocabulary_is_refused(writer: Predictor) -> None:
    with pytest.raises(UnknownCharactersError, match=r"'Z' at position 0 of prompt"):
        writer.generate("Zap", 3)
