"""Hyperparameters: the one definition used by the API, the checkpoints and the engine.

Every field has a bound, a default and a description, so the OpenAPI schema documents
them and a request with nonsense values is refused before any work is queued.
The defaults are the tutorial's last model (Embedding 10 -> RNN 8 x 2 layers -> Linear,
Adam, lr 0.05, 15 epochs): what aligned pairs get. Plain text gets ``text_defaults``
instead, for any field the request leaves out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    model_validator,
)

from app.ml.jsontypes import JsonBool, JsonFloat, JsonInt, OptionalSeed, integral

Architecture = Literal["rnn_cell", "rnn", "embedding_rnn"]
# The tutorial's first two models: one-hot inputs, no embedding, and a hidden state that
# is the output, so as wide as the output vocabulary whatever hidden_size says.
ONE_HOT_ARCHITECTURES = ("rnn_cell", "rnn")
Cell = Literal["rnn", "gru", "lstm"]
OptimizerName = Literal["adam", "adamw", "sgd"]
LrSchedule = Literal["constant", "cosine", "plateau"]
MAX_STEPS = 10**9
MAX_SECONDS = 30 * 24 * 3600  # a month; a service's own limit is usually far lower


def null_only_for_one_hot(name: str) -> JsonValue:
    """The rule that ``name`` is null only where it does not apply (``_check_combinations``)."""
    return {
        "if": {"properties": {name: {"type": "null"}}, "required": [name]},
        "then": {
            "properties": {"architecture": {"enum": list(ONE_HOT_ARCHITECTURES)}},
            "required": ["architecture"],
        },
    }


# The rules of _check_combinations, stated in the JSON schema so that clients (and the
# API fuzzer) know them; a field left out takes its default, which satisfies each rule.
COMBINATION_RULES: list[JsonValue] = [
    {  # bidirectional needs architecture embedding_rnn
        "if": {"properties": {"bidirectional": {"const": True}}, "required": ["bidirectional"]},
        "then": {"properties": {"architecture": {"const": "embedding_rnn"}}},
    },
    {  # dropout acts between recurrent layers: num_layers >= 2, not rnn_cell
        "if": {"properties": {"dropout": {"exclusiveMinimum": 0}}, "required": ["dropout"]},
        "then": {
            "properties": {
                "num_layers": {"minimum": 2},
                "architecture": {"enum": ["rnn", "embedding_rnn"]},
            }
        },
    },
    *[null_only_for_one_hot(name) for name in ("hidden_size", "embedding_size")],
    {  # early stopping watches the validation loss: validation_fraction > 0
        "if": {
            "properties": {"early_stopping_patience": {"type": "integer"}},
            "required": ["early_stopping_patience"],
        },
        "then": {
            "properties": {"validation_fraction": {"exclusiveMinimum": 0}},
        },
    },
    {  # plateau watches the validation loss: validation_fraction > 0
        "if": {"properties": {"lr_schedule": {"const": "plateau"}}, "required": ["lr_schedule"]},
        "then": {"properties": {"validation_fraction": {"exclusiveMinimum": 0}}},
    },
]


class Hyperparameters(BaseModel):
    """How to build and train a model."""

    # Numbers and booleans as JSON Schema types them (app.ml.jsontypes): true is not the
    # integer 1, nor "0.5" a number. Per field rather than model-wide strict mode, which
    # would refuse 49.0 for an integer.
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"allOf": COMBINATION_RULES}
    )

    architecture: Architecture = Field(
        "embedding_rnn",
        description=(
            "rnn_cell: a recurrent cell stepped by hand over one-hot inputs, its hidden state "
            "is the output (the tutorial's first model); rnn: a fused recurrent layer over "
            "one-hot inputs, hidden state as output; embedding_rnn: Embedding -> recurrent "
            "layers -> Linear."
        ),
    )
    cell: Cell = Field("rnn", description="Recurrent cell: plain tanh RNN, GRU or LSTM.")
    embedding_size: Annotated[StrictInt, Field(ge=1, le=1024), integral] | None = Field(
        10,
        description="Embedding width (embedding_rnn only; null, and stored so, for rnn_cell "
        "and rnn, which read one-hot inputs).",
    )
    hidden_size: Annotated[StrictInt, Field(ge=1, le=4096), integral] | None = Field(
        8,
        description=(
            "Hidden width (embedding_rnn only: in rnn_cell and rnn the hidden state is the "
            "output, so its size is the output vocabulary's, which the version's config "
            "shows; null, and stored so, for them)."
        ),
    )
    num_layers: JsonInt = Field(
        2,
        ge=1,
        le=8,
        description="Stacked recurrent layers (rnn_cell is one cell: 1, and stored so).",
    )
    bidirectional: JsonBool = Field(
        False,
        description="Read each input both ways (embedding_rnn on aligned or labeled pairs only).",
    )
    dropout: JsonFloat = Field(
        0.0, ge=0.0, le=0.9, description="Dropout between recurrent layers (num_layers >= 2)."
    )
    optimizer: OptimizerName = Field("adam", description="adam (the tutorial's), adamw or sgd.")
    learning_rate: JsonFloat = Field(0.05, gt=0.0, le=10.0, description="Optimizer step size.")
    weight_decay: JsonFloat = Field(0.0, ge=0.0, le=1.0, description="L2 penalty / AdamW decay.")
    momentum: JsonFloat = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum.")
    epochs: JsonInt = Field(15, ge=1, le=100_000, description="Passes over the training data.")
    batch_size: JsonInt = Field(32, ge=1, le=4096, description="Sequences per optimizer step.")
    grad_clip: JsonFloat | None = Field(
        None, gt=0.0, le=1000.0, description="Clip the gradient norm to this value; null: off."
    )
    seq_len: JsonInt = Field(
        64, ge=1, le=4096, description="Window length when training on plain text."
    )
    validation_fraction: JsonFloat = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Share of examples held out for validation (rounded down; 0: none).",
    )
    max_steps: Annotated[StrictInt, Field(ge=1, le=MAX_STEPS), integral] | None = Field(
        None,
        description="Stop after this many optimizer steps, whatever epochs says (whichever "
        "comes first); the job succeeds with the best weights so far. null: no limit.",
    )
    max_seconds: Annotated[StrictFloat, Field(gt=0, le=MAX_SECONDS)] | None = Field(
        None,
        description="Stop after this many seconds of training (across restarts), whatever "
        "epochs says; the job succeeds with the best weights so far. null: no limit.",
    )
    lr_schedule: LrSchedule = Field(
        "constant",
        description="constant: learning_rate throughout; cosine: linear warm-up over "
        "warmup_steps, then a cosine decay to min_learning_rate over the planned steps "
        "(epochs x steps per epoch, or max_steps if fewer); plateau: multiply the rate by "
        "plateau_factor when the validation loss has not improved by min_delta for "
        "plateau_patience epochs (needs validation_fraction > 0).",
    )
    warmup_steps: JsonInt = Field(
        0, ge=0, le=MAX_STEPS, description="cosine: steps of linear warm-up from 0."
    )
    min_learning_rate: JsonFloat = Field(
        0.0, ge=0.0, le=10.0, description="cosine: the rate at the end of the decay."
    )
    plateau_factor: JsonFloat = Field(
        0.1, gt=0.0, lt=1.0, description="plateau: what the rate is multiplied by."
    )
    plateau_patience: JsonInt = Field(
        2, ge=0, le=10_000, description="plateau: epochs without improvement tolerated."
    )
    early_stopping_patience: Annotated[StrictInt, Field(ge=1, le=10_000), integral] | None = Field(
        None,
        description="Stop when the validation loss has not improved by min_delta for "
        "this many epochs; the version keeps the best epoch's weights (needs "
        "validation_fraction > 0). null: off.",
    )
    min_delta: JsonFloat = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="How much lower a validation loss must be to count as an improvement.",
    )
    checkpoint_every_steps: Annotated[StrictInt, Field(ge=1, le=MAX_STEPS), integral] | None = (
        Field(
            None,
            description="Report progress and write a resumable checkpoint every this many "
            "optimizer steps within an epoch (besides the worker's time-based interval, "
            "CHARNN_PROGRESS_SECONDS). null: by time only.",
        )
    )
    seed: OptionalSeed = Field(
        None,
        description="Random seed; a fixed seed makes a CPU run reproducible bit for bit. "
        "null: drawn at random and recorded.",
    )

    @model_validator(mode="after")
    def _as_used(self) -> Self:
        """What the architecture really uses, so that a job stores what it trained with:
        nothing of the hidden and embedding sizes the one-hot models ignore, and one
        layer for rnn_cell (an rnn_cell job that listed hidden_size 8 and num_layers 2
        had trained one cell as wide as its vocabulary). Given values are validated
        first, so nonsense is refused even where it would not be used."""
        if self.architecture in ONE_HOT_ARCHITECTURES:
            # frozen for everyone else; settled here, before anyone holds the instance
            self.__dict__.update(hidden_size=None, embedding_size=None)
        if self.architecture == "rnn_cell":
            self.__dict__["num_layers"] = 1
        return self

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        if self.bidirectional and self.architecture != "embedding_rnn":
            raise ValueError(
                "bidirectional needs architecture 'embedding_rnn' "
                f"(got {self.architecture!r}, whose hidden state is its output)"
            )
        if self.dropout > 0 and (self.num_layers < 2 or self.architecture == "rnn_cell"):
            raise ValueError(
                "dropout acts between recurrent layers: use num_layers >= 2 with "
                "architecture 'rnn' or 'embedding_rnn', or set dropout to 0"
            )
        for name in ("hidden_size", "embedding_size"):
            if getattr(self, name) is None and self.architecture not in ONE_HOT_ARCHITECTURES:
                raise ValueError(
                    f"{name} may be null only for architecture 'rnn_cell' or 'rnn' (which "
                    f"have none); {self.architecture!r} needs one"
                )
        return self

    @model_validator(mode="after")
    def _check_validation_needs(self) -> Self:
        """Early stopping and the plateau schedule judge by the validation loss."""
        if self.validation_fraction == 0:
            if self.early_stopping_patience is not None:
                raise ValueError(
                    "early_stopping_patience needs validation data: set validation_fraction "
                    "above 0, or early_stopping_patience to null"
                )
            if self.lr_schedule == "plateau":
                raise ValueError(
                    "lr_schedule 'plateau' needs validation data: set validation_fraction "
                    "above 0, or use lr_schedule 'constant' or 'cosine'"
                )
        return self


# What a text job gets for each hyperparameter it leaves out. The tutorial's 8-unit RNN
# cannot hold text: on 170 KB of prose it ends its 15 epochs at 2.3 nats a character,
# writing "the the the". A 256-unit GRU over 32-wide embeddings (about 250,000
# parameters) writes mostly real words after 5 epochs over 170 KB (validation loss 1.3
# nats) and levels off near 1.05 by epoch 12; it cost 4 to 8 s an epoch on one core of
# a shared 2-core CPU (see SECONDS_PER_PARAMETER_CHARACTER in app.ml.train). Windows of
# 100 characters span a few words; batches of 32 make about 50 Adam steps an epoch at
# lr 0.003, which a GRU takes without clipping. A service's limits cap these
# (app.jobs.spec).
TEXT_DEFAULTS: dict[str, Any] = {
    "cell": "gru",
    "embedding_size": 32,
    "hidden_size": 256,
    "num_layers": 1,
    "learning_rate": 0.003,
    "batch_size": 32,
    "seq_len": 100,
}
# Epochs for text: enough passes to read about 3.4 million characters (20 over 170 KB,
# two minutes on one core), at least one and at most 200 (a short text needs many
# passes to take its optimizer steps, and each pass over it is cheap).
TEXT_CHARACTERS_TO_READ = 3_400_000
TEXT_MAX_DEFAULT_EPOCHS = 200


def text_defaults(characters: int) -> dict[str, Any]:
    """The hyperparameters a text job of ``characters`` gets for those it leaves out."""
    epochs = round(TEXT_CHARACTERS_TO_READ / max(characters, 1))
    return {**TEXT_DEFAULTS, "epochs": min(max(epochs, 1), TEXT_MAX_DEFAULT_EPOCHS)}
