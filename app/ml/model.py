"""The model variants, top to bottom.

Every model maps index-encoded characters to per-position logits over the output
vocabulary:

    ids (B, T) long  ->  logits (B, T, V_out),  state

``lengths`` (B,) marks where each padded row really ends; the fused variants pack
the batch so that padding never reaches the recurrence (which matters for the
bidirectional encoder, whose backward pass would otherwise start in the padding).
``state`` is the recurrent state, threaded through by the sampler.

The first two variants are the tutorial's: their hidden state *is* the output, so
their hidden size equals the output vocabulary size and inputs are one-hot.

A classifier (``head="sequence"``) reads the whole sequence and scores its labels once:

    ids (B, T) long  ->  logits (B, V_labels),  state

It is the embedding variant's encoder with its head over the final hidden state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from app.ml.hyperparameters import ONE_HOT_ARCHITECTURES, Architecture, Cell, Hyperparameters
from app.ml.vocab import Vocab, one_hot

# The recurrent state: h (layers, B, H) for RNN/GRU, (h, c) for LSTM; or per-cell (B, H).
State = Any

# typed as plain callables: mypy reads RNNBase's own signature (which wants ``mode``)
FUSED_LAYERS: dict[str, Callable[..., nn.RNNBase]] = {
    "rnn": nn.RNN,
    "gru": nn.GRU,
    "lstm": nn.LSTM,
}
CELLS: dict[str, type[nn.Module]] = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model's modules; saved in every checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Architecture
    cell: Cell
    input_size: int = Field(ge=1, le=1024, description="Input vocabulary size.")
    output_size: int = Field(ge=1, le=1024, description="Output vocabulary size.")
    embedding_size: int | None = Field(ge=1, le=1024, description="null: one-hot inputs.")
    hidden_size: int = Field(ge=1, le=4096)
    num_layers: int = Field(ge=1, le=8)
    bidirectional: bool
    dropout: float = Field(ge=0.0, le=0.9)
    # absent from checkpoints written before classifiers, which score every position;
    # written only for a classifier, so that the others' configs read as they did
    head: Literal["position", "sequence"] = Field(
        "position",
        description="position: logits at every position (pairs, text); sequence: one set "
        "of label logits per sequence, from the final hidden state (classify).",
        exclude_if=lambda value: value == "position",
    )

    @model_validator(mode="after")
    def _sequence_head_needs_an_encoder(self) -> Self:
        if self.head == "sequence" and self.architecture != "embedding_rnn":
            raise ValueError(
                f"a classifier needs architecture 'embedding_rnn' (got {self.architecture!r}, "
                "whose hidden state is a per-character output, not an encoding to classify)"
            )
        return self

    @model_validator(mode="after")
    def _one_hot_has_no_embedding(self) -> Self:
        """The one-hot models have no embedding: null, also in a checkpoint written before
        hyperparameters were stored as used (it gave them the unused embedding_size)."""
        if self.architecture in ONE_HOT_ARCHITECTURES:
            self.__dict__["embedding_size"] = None  # frozen to everyone but its validator
        elif self.embedding_size is None:
            raise ValueError(f"architecture {self.architecture!r} needs an embedding_size")
        return self

    @property
    def embedding_width(self) -> int:
        """``embedding_size`` of an embedding_rnn, which always has one (see above)."""
        if self.embedding_size is None:
            raise ValueError(f"architecture {self.architecture!r} has no embedding")
        return self.embedding_size

    @classmethod
    def from_hyperparameters(cls, hp: Hyperparameters, vocab: Vocab) -> ModelConfig:
        # hyperparameters hold what their architecture uses (no hidden size for the
        # tutorial's variants, which read their logits straight off the hidden state)
        return cls(
            architecture=hp.architecture,
            cell=hp.cell,
            input_size=len(vocab.input),
            output_size=vocab.output_size,
            embedding_size=hp.embedding_size,
            hidden_size=hp.hidden_size or vocab.output_size,
            num_layers=hp.num_layers,
            bidirectional=hp.bidirectional,
            dropout=hp.dropout,
            head="sequence" if vocab.labels is not None else "position",
        )


def run_recurrent(
    layer: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor | None, state: State
) -> tuple[torch.Tensor, State]:
    """Run a fused recurrent layer over (B, T, F) whose rows may end early (``lengths``).

    A unidirectional layer runs straight over the padding: each output depends only on
    the steps before it, so every output that counts is exact, and one padded call is
    about 1.5x faster than a packed one on the CPU. Its final state, though, has run
    over the padding of the shorter rows, so a ragged batch returns none. A
    bidirectional layer reads each row backwards from its own end: it needs packing.
    """
    total_length = x.size(1)
    if lengths is None or bool((lengths == total_length).all()):
        return layer(x, state)  # type: ignore[no-any-return]
    if not layer.bidirectional:
        out, _ = layer(x, state)
        return out, None
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = layer(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=total_length)
    return out, state


class RNNCellModel(nn.Module):
    """The tutorial's first model: one cell stepped by hand, hidden state = logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_size = config.input_size
        self.cell = CELLS[config.cell](config.input_size, config.output_size)
        self.is_lstm = config.cell == "lstm"

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor | None = None, state: State = None
    ) -> tuple[torch.Tensor, State]:
        x = one_hot(ids, self.input_size)  # (B, T, I)
        outputs = []
        for t in range(x.size(1)):
            # padded steps run too; they come after the real ones, so they cannot
            # change the outputs that count
            state = self.cell(x[:, t], state)  # (B, H), or (h, c) for LSTM
            outputs.append(state[0] if self.is_lstm else state)
        return torch.stack(outputs, dim=1), state  # (B, T, H = V_out)


class OneHotRNN(nn.Module):
    """The tutorial's second model: a fused recurrent layer, hidden state = logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_size = config.input_size
        self.rnn = FUSED_LAYERS[config.cell](
            input_size=config.input_size,
            hidden_size=config.output_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            batch_first=True,
        )

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor | None = None, state: State = None
    ) -> tuple[torch.Tensor, State]:
        x = one_hot(ids, self.input_size)  # (B, T, I)
        return run_recurrent(self.rnn, x, lengths, state)  # (B, T, H = V_out)


def embedded_recurrent_layers(config: ModelConfig) -> tuple[nn.Embedding, nn.RNNBase]:
    """The embedding and the fused recurrent layers that read it (embedding_rnn and the
    classifier's encoder): the same modules, under the same names in either's weights."""
    embedding = nn.Embedding(config.input_size, config.embedding_width)
    rnn = FUSED_LAYERS[config.cell](
        input_size=config.embedding_width,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        bidirectional=config.bidirectional,
        batch_first=True,
    )
    return embedding, rnn


class EmbeddingRNN(nn.Module):
    """The tutorial's last model: Embedding -> recurrent layers -> Linear."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding, self.rnn = embedded_recurrent_layers(config)
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(config.hidden_size * directions, config.output_size)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor | None = None, state: State = None
    ) -> tuple[torch.Tensor, State]:
        x = self.embedding(ids)  # (B, T, E)
        x, state = run_recurrent(self.rnn, x, lengths, state)  # (B, T, H * directions)
        return self.head(x), state  # (B, T, V_out)


class SequenceClassifier(nn.Module):
    """Embedding -> recurrent encoder -> Linear over the final hidden state: one set of
    label logits per sequence (PyTorch's name-classification tutorial, batched).

    Rows are packed, so each row's final state is taken at its own last character,
    never in the padding: the forward direction's state after the last character, and
    for a bidirectional encoder the backward direction's state after the first.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding, self.rnn = embedded_recurrent_layers(config)
        self.directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(config.hidden_size * self.directions, config.output_size)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor | None = None, state: State = None
    ) -> tuple[torch.Tensor, State]:
        batch, width = ids.shape
        if lengths is None:
            lengths = torch.full((batch,), width, dtype=torch.long)
        x = self.embedding(ids)  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed, state)
        h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c); h (L*D, B, H)
        last_layer = h[-self.directions :]  # (D, B, H): forward end, and backward start
        encoding = last_layer.transpose(0, 1).reshape(batch, -1)  # (B, D*H)
        return self.head(encoding), state  # (B, V_labels)


VARIANTS: dict[str, type[nn.Module]] = {
    "rnn_cell": RNNCellModel,
    "rnn": OneHotRNN,
    "embedding_rnn": EmbeddingRNN,
}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model; parameter creation draws from torch's global RNG."""
    if config.head == "sequence":
        return SequenceClassifier(config)
    return VARIANTS[config.architecture](config)


# The state dict of every variant, by arithmetic: checking an upload against what its
# JSON declares must not build the model it declares (a 25 KB file can declare gigabytes).
# tests/ml/test_model.py holds these to the state dicts of built models, variant by variant.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks stacked in weight_ih / weight_hh
TensorSpec = tuple[tuple[int, ...], torch.dtype]


def recurrent_shapes(
    prefix: str, cell: str, input_size: int, hidden: int, layers: int, directions: int
) -> dict[str, TensorSpec]:
    """The parameters of a fused layer (``layers`` > 0) or of one cell (``layers`` == 0)."""
    rows = GATES[cell] * hidden  # (G*H): the gates' rows, stacked
    shapes: dict[str, TensorSpec] = {}
    for layer in range(max(layers, 1)):
        width = input_size if layer == 0 else hidden * directions
        for direction in range(directions):
            suffix = "" if layers == 0 else f"_l{layer}" + "_reverse" * direction
            shapes[f"{prefix}.weight_ih{suffix}"] = ((rows, width), torch.float32)
            shapes[f"{prefix}.weight_hh{suffix}"] = ((rows, hidden), torch.float32)
            shapes[f"{prefix}.bias_ih{suffix}"] = ((rows,), torch.float32)
            shapes[f"{prefix}.bias_hh{suffix}"] = ((rows,), torch.float32)
    return shapes


def expected_shapes(config: ModelConfig) -> dict[str, TensorSpec]:
    """Name -> (shape, dtype) of every tensor in the state dict of ``config``'s model."""
    if config.architecture == "rnn_cell":  # RNNCellModel: one cell, hidden = V_out
        return recurrent_shapes("cell", config.cell, config.input_size, config.output_size, 0, 1)
    if config.architecture == "rnn":  # OneHotRNN: fused layers, hidden = V_out, one way
        return recurrent_shapes(
            "rnn", config.cell, config.input_size, config.output_size, config.num_layers, 1
        )
    directions = 2 if config.bidirectional else 1  # EmbeddingRNN, SequenceClassifier alike
    return {
        "embedding.weight": ((config.input_size, config.embedding_width), torch.float32),
        **recurrent_shapes(
            "rnn",
            config.cell,
            config.embedding_width,
            config.hidden_size,
            config.num_layers,
            directions,
        ),
        "head.weight": ((config.output_size, config.hidden_size * directions), torch.float32),
        "head.bias": ((config.output_size,), torch.float32),
    }


def estimate_parameters(config: ModelConfig) -> int:
    """The parameter count of ``config``'s model, without building it."""
    return sum(math.prod(shape) for shape, _ in expected_shapes(config).values())
