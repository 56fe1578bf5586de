"""The engine reproduces the tutorial (seed/basic_rnn_tutorial.txt): "hello" -> "ohlol".

The two reference loops below are the tutorial's code as it writes it, less its prints
(and with type hints for the linters), so that a reader can lay them side by side.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from app.cli import cli
from app.ml.data import pairs_dataset
from app.ml.hyperparameters import Hyperparameters
from app.ml.train import TrainingSession, train
from app.ml.vocab import Vocab

CPU = torch.device("cpu")
HELLO = [("hello", "ohlol")]

# the tutorial's three models with the settings it gives them (15 epochs each)
TUTORIAL_SETTINGS: dict[str, dict[str, Any]] = {
    "rnn_cell": {"architecture": "rnn_cell", "learning_rate": 0.1},
    "rnn": {"architecture": "rnn", "num_layers": 1, "learning_rate": 0.1},
    "embedding_rnn": {
        "architecture": "embedding_rnn",
        "embedding_size": 10,
        "hidden_size": 8,
        "num_layers": 2,
        "learning_rate": 0.05,
    },
}


def train_tutorial(architecture: str, seed: int, vocab: Vocab | None = None) -> TrainingSession:
    hp = Hyperparameters(
        **TUTORIAL_SETTINGS[architecture], epochs=15, validation_fraction=0.0, seed=seed
    )
    session = TrainingSession.start(hp, pairs_dataset(HELLO, vocab), CPU)
    train(session)
    return session


@pytest.mark.parametrize("architecture", TUTORIAL_SETTINGS)
def test_each_tutorial_model_learns_hello_to_ohlol(
    architecture: str, tutorial_vocab: Vocab
) -> None:
    # The tutorial's own setting: 4 output classes, 15 epochs. Its printed run reached
    # "ohlol" at epoch 8, yet some starts are still on "ohlll" or "ohool" at epoch 15:
    # about 3 in 10 for the one-hot models (whose weights equal the tutorial loop's, see
    # below), none for embedding_rnn. A clear majority gets there.
    predictions = [
        train_tutorial(architecture, seed, tutorial_vocab).history[-1].sample_prediction
        for seed in range(20)
    ]

    assert predictions.count("ohlol") >= 12, predictions


@pytest.mark.parametrize("architecture", TUTORIAL_SETTINGS)
def test_with_the_inferred_vocabulary_nearly_every_run_learns_ohlol(architecture: str) -> None:
    # inferred from the pairs, the outputs are only ['h', 'l', 'o']: an easier problem
    predictions = [
        train_tutorial(architecture, seed).history[-1].sample_prediction for seed in range(10)
    ]

    assert predictions.count("ohlol") >= 8, predictions


# --- the tutorial's loops, verbatim -------------------------------------------------------


def tutorial_rnn_cell_losses(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    input_size = 4
    hidden_size = 4
    batch_size = 1

    idx2char = ["e", "h", "l", "o"]  # noqa: F841 -- the tutorial's, for printing only
    x_data = [1, 0, 2, 2, 3]
    y_data = [3, 1, 2, 3, 2]

    one_hot_lookup = [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
    ]
    x_one_hot = [one_hot_lookup[x] for x in x_data]

    inputs = torch.Tensor(x_one_hot).view(-1, batch_size, input_size)
    labels = torch.LongTensor(y_data).view(-1, 1)

    class Model(torch.nn.Module):
        def __init__(self, input_size: int, hidden_size: int, batch_size: int) -> None:
            super().__init__()
            self.batch_size = batch_size
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.rnncell = torch.nn.RNNCell(
                input_size=self.input_size, hidden_size=self.hidden_size
            )

        def forward(self, input: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
            hidden = self.rnncell(input, hidden)
            return hidden

        def init_hidden(self) -> torch.Tensor:
            return torch.zeros(self.batch_size, self.hidden_size)

    torch.manual_seed(seed)
    net = Model(input_size, hidden_size, batch_size)

    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)

    losses = []
    for _epoch in range(15):
        loss: Any = 0
        optimizer.zero_grad()
        hidden = net.init_hidden()
        for input, label in zip(inputs, labels, strict=True):
            hidden = net(input, hidden)
            loss += criterion(hidden, label)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, net.state_dict()


def tutorial_rnn_losses(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    input_size = 4
    hidden_size = 4
    batch_size = 1
    num_layers = 1
    seq_len = 5

    class Model(torch.nn.Module):
        def __init__(
            self, input_size: int, hidden_size: int, batch_size: int, num_layers: int = 1
        ) -> None:
            super().__init__()
            self.num_layers = num_layers
            self.batch_size = batch_size
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.rnn = torch.nn.RNN(
                input_size=self.input_size, hidden_size=self.hidden_size, num_layers=num_layers
            )

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            hidden = torch.zeros(self.num_layers, self.batch_size, self.hidden_size)
            out, _ = self.rnn(input, hidden)
            return out.view(-1, self.hidden_size)  # (seqLen x batchSize, hiddenSize)

    torch.manual_seed(seed)
    net = Model(input_size, hidden_size, batch_size, num_layers)

    x_data = [1, 0, 2, 2, 3]
    y_data = [3, 1, 2, 3, 2]
    one_hot_lookup = [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
    ]
    x_one_hot = [one_hot_lookup[x] for x in x_data]

    inputs = torch.Tensor(x_one_hot).view(seq_len, batch_size, input_size)
    labels = torch.LongTensor(y_data)

    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)

    losses = []
    for _epoch in range(15):
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, net.state_dict()


def same_values(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> bool:
    """Equal tensors in the same order (the modules name them differently)."""
    return len(ours) == len(theirs) and all(
        torch.equal(a, b) for a, b in zip(ours.values(), theirs.values(), strict=True)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rnn_cell_follows_the_tutorials_loop_exactly(seed: int, tutorial_vocab: Vocab) -> None:
    # the tutorial's output layer has 4 classes, 'e' included: give its vocabulary
    session = train_tutorial("rnn_cell", seed, tutorial_vocab)
    losses, weights = tutorial_rnn_cell_losses(seed)

    # EpochMetrics.loss of rnn_cell is the loss summed over the steps, as the tutorial prints
    assert [m.loss for m in session.history] == pytest.approx(losses, abs=1e-6)
    assert same_values(session.model.state_dict(), weights)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rnn_follows_the_tutorials_loop(seed: int, tutorial_vocab: Vocab) -> None:
    session = train_tutorial("rnn", seed, tutorial_vocab)
    losses, weights = tutorial_rnn_losses(seed)

    # the weights agree bit for bit; the reported loss only to float32 rounding, since
    # an epoch's loss is accumulated as (mean over characters) x (characters) / (characters)
    assert [m.loss for m in session.history] == pytest.approx(losses, abs=1e-6)
    assert same_values(session.model.state_dict(), weights)


# --- the `charnn tutorial` command --------------------------------------------------------

EPOCH_LINE = re.compile(r"Predicted string: ([ehlo]{5}), Epoch \[(\d+)/15\] loss=(\d+\.\d{4})")


def test_tutorial_command_prints_the_tutorials_epoch_lines() -> None:
    result = CliRunner().invoke(cli, ["tutorial", "--device", "cpu", "--seed", "1"])

    assert result.exit_code == 0, result.output
    lines = [EPOCH_LINE.fullmatch(line) for line in result.stdout.splitlines()]
    assert all(lines), result.stdout
    printed = [(int(m[2]), m[3]) for m in lines if m]
    tutorial_losses, _ = tutorial_rnn_cell_losses(seed=1)
    assert printed == [(epoch, f"{loss:.4f}") for epoch, loss in enumerate(tutorial_losses, 1)]
    assert lines[-1] is not None
    assert lines[-1][1] == "ohlol"


def test_tutorial_command_reports_a_length_mismatch_and_exits_2() -> None:
    result = CliRunner().invoke(cli, ["tutorial", "--device", "cpu", "--target", "ohlo"])

    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: pairs[0]: input has 5 characters but target has 4; aligned pairs map each"
    )
