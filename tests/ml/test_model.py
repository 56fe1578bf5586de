"""The model variants: ids (B, T) -> logits (B, T, V_out), padding kept out of the way."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional

from app.ml.data import pad
from app.ml.hyperparameters import Hyperparameters
from app.ml.model import ModelConfig, build_model, estimate_parameters, expected_shapes
from app.ml.vocab import Vocab

VOCAB = Vocab(input=list("abcdef"), output=list("xyz"))


def make_model(**hyperparameters: Any) -> torch.nn.Module:
    config = ModelConfig.from_hyperparameters(Hyperparameters(**hyperparameters), VOCAB)
    torch.manual_seed(0)
    return build_model(config).eval()


@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn", "embedding_rnn"])
def test_every_variant_maps_ids_to_logits_over_the_output_vocabulary(architecture: str) -> None:
    model = make_model(architecture=architecture)

    logits, _state = model(torch.zeros(2, 7, dtype=torch.long))

    assert logits.shape == (2, 7, len(VOCAB.output))


@pytest.mark.parametrize("architecture", ["rnn_cell", "rnn"])
def test_tutorial_variants_size_their_hidden_state_to_the_output_vocabulary(
    architecture: str,
) -> None:
    hp = Hyperparameters(architecture=architecture, hidden_size=64, num_layers=3)

    config = ModelConfig.from_hyperparameters(hp, VOCAB)

    assert config.hidden_size == len(VOCAB.output)
    assert config.num_layers == (1 if architecture == "rnn_cell" else 3)


def test_bidirectional_encoder_reads_the_future_too() -> None:
    forward_only = make_model(cell="gru")
    both_ways = make_model(cell="gru", bidirectional=True)
    prefix, whole = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2, 3, 4]])

    assert torch.allclose(forward_only(prefix)[0], forward_only(whole)[0][:, :3], atol=1e-6)
    assert not torch.allclose(both_ways(prefix)[0], both_ways(whole)[0][:, :3], atol=1e-3)


BATCHABLE = {
    "rnn_cell": {"architecture": "rnn_cell"},
    "rnn_cell-lstm": {"architecture": "rnn_cell", "cell": "lstm"},
    "rnn": {"architecture": "rnn"},
    "embedding_rnn": {"architecture": "embedding_rnn"},
    "embedding_rnn-bidirectional": {"architecture": "embedding_rnn", "bidirectional": True},
    "embedding_rnn-bidirectional-lstm": {
        "architecture": "embedding_rnn",
        "bidirectional": True,
        "cell": "lstm",
    },
}
SEQUENCES = [[0, 1, 2, 3, 4, 5], [5, 4], [2, 2, 3, 1]]
TARGETS = [[0, 1, 2, 0, 1, 2], [2, 1], [1, 1, 0, 2]]


def test_a_ragged_batch_has_no_final_state_unless_its_layer_reads_backwards() -> None:
    # a one-way layer runs over the padding (faster than packing; the outputs that count
    # are exact), so the shorter rows' final state would be wrong: none is returned
    lengths = torch.tensor([len(s) for s in SEQUENCES])
    one_way = make_model(architecture="embedding_rnn")
    two_way = make_model(architecture="embedding_rnn", bidirectional=True)

    assert one_way(pad(SEQUENCES, 3), lengths)[1] is None
    assert two_way(pad(SEQUENCES, 3), lengths)[1] is not None
    assert one_way(torch.tensor([SEQUENCES[0]]), torch.tensor([6]))[1] is not None


@pytest.mark.parametrize("hyperparameters", BATCHABLE.values(), ids=BATCHABLE.keys())
def test_a_padded_batch_matches_its_sequences_one_by_one(hyperparameters: dict[str, Any]) -> None:
    model = make_model(**hyperparameters)
    lengths = torch.tensor([len(s) for s in SEQUENCES])

    # pad with an id that is a real character: only ``lengths`` may keep it out
    batched, _ = model(pad(SEQUENCES, 3), lengths)  # (3, 6, V)

    for row, (ids, targets) in enumerate(zip(SEQUENCES, TARGETS, strict=True)):
        alone, _ = model(torch.tensor([ids]))  # (1, T, V)
        in_batch = batched[row : row + 1, : len(ids)]
        assert torch.allclose(in_batch, alone, atol=1e-6)
        assert torch.equal(in_batch.argmax(-1), alone.argmax(-1))
        assert torch.allclose(
            functional.cross_entropy(in_batch[0], torch.tensor(targets), reduction="sum"),
            functional.cross_entropy(alone[0], torch.tensor(targets), reduction="sum"),
            atol=1e-6,
        )


VARIANTS = [
    pytest.param(
        architecture,
        cell,
        layers,
        bidirectional,
        id=f"{architecture}-{cell}-{layers}" + "-bi" * bidirectional,
    )
    for architecture in ("rnn_cell", "rnn", "embedding_rnn")
    for cell in ("rnn", "gru", "lstm")
    for layers in (1, 3)
    for bidirectional in ((False, True) if architecture == "embedding_rnn" else (False,))
    if not (architecture == "rnn_cell" and layers > 1)
]


@pytest.mark.parametrize(("architecture", "cell", "layers", "bidirectional"), VARIANTS)
def test_the_arithmetic_shapes_are_those_of_the_built_model(
    architecture: str, cell: str, layers: int, bidirectional: bool
) -> None:
    config = ModelConfig(
        architecture=architecture,  # type: ignore[arg-type]
        cell=cell,  # type: ignore[arg-type]
        input_size=5,
        output_size=7,
        embedding_size=11,
        hidden_size=13,
        num_layers=layers,
        bidirectional=bidirectional,
        dropout=0.0,
    )
    built = build_model(config).state_dict()

    assert expected_shapes(config) == {
        name: (tuple(tensor.shape), tensor.dtype) for name, tensor in built.items()
    }
    assert estimate_parameters(config) == sum(t.numel() for t in built.values())
