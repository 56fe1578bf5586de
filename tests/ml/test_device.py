"""Devices: choosing one, and the same model on CPU and CUDA.

The ``gpu`` tests run where torch sees a CUDA device and are skipped elsewhere (CI).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.ml.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from app.ml.data import pairs_dataset, text_dataset
from app.ml.device import limit_threads, resolve_device
from app.ml.errors import DeviceUnavailableError
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Predictor
from app.ml.train import TrainingSession, train

CPU = torch.device("cpu")
INPUTS = ["hello", "he", "lol", ""]


def test_cpu_is_always_available() -> None:
    assert resolve_device("cpu") == CPU


def test_auto_prefers_cuda_and_falls_back_to_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused(name: str) -> None:
    with pytest.raises(DeviceUnavailableError, match="this machine has no CUDA GPU"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["banana", "", "meta", "mps", "tpu"])
def test_a_device_that_is_not_cpu_or_cuda_is_refused(name: str) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"use auto, cpu(, cuda)? or cuda"):
        resolve_device(name)


@pytest.fixture
def torch_threads() -> Iterator[int]:
    """torch's thread count as it is, and again after the test."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_limit_threads_lowers_torch_threads_to_the_cpus_and_never_raises_them(
    torch_threads: int,
) -> None:
    limit_threads(torch_threads + 8)
    assert torch.get_num_threads() == torch_threads

    limit_threads(1)
    assert torch.get_num_threads() == 1


# --- on a GPU -----------------------------------------------------------------------------


def predictions_agree(checkpoint: Checkpoint, cpu: Predictor, cuda: Predictor) -> None:
    ids = checkpoint.vocab.encode_inputs(INPUTS[:-1])
    assert cuda.predict(INPUTS) == cpu.predict(INPUTS)
    assert torch.allclose(cuda.logits(ids)[0].cpu(), cpu.logits(ids)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_resolve_device_gives_an_existing_gpu_and_refuses_a_missing_one() -> None:
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(DeviceUnavailableError, match=r"only \d+ GPU\(s\) exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.gpu
def test_training_on_cuda_then_predicting_there() -> None:
    cuda = torch.device("cuda")
    hp = Hyperparameters(epochs=30, validation_fraction=0.0, seed=0)
    session = TrainingSession.start(hp, pairs_dataset([("hello", "ohlol")]), cuda)

    train(session)
    predictor = Predictor.from_checkpoint(session.checkpoint(), cuda)

    assert all(p.is_cuda for p in session.model.parameters())
    assert predictor.predict(["hello"])[0].output == "ohlol"


@pytest.mark.gpu
def test_a_checkpoint_written_on_cpu_predicts_the_same_on_cuda(
    hello_checkpoint: Checkpoint, tmp_path: Path, cuda_fp32: torch.device
) -> None:
    save_checkpoint(hello_checkpoint, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")

    cpu, cuda = Predictor.from_checkpoint(loaded, CPU), Predictor.from_checkpoint(loaded, cuda_fp32)

    predictions_agree(loaded, cpu, cuda)


@pytest.mark.gpu
def test_a_checkpoint_written_on_cuda_predicts_the_same_on_cpu(
    tmp_path: Path, cuda_fp32: torch.device
) -> None:
    # bidirectional LSTM over mixed lengths: cuDNN's packed path against the CPU's
    hp = Hyperparameters(cell="lstm", bidirectional=True, epochs=5, batch_size=2, seed=0)
    pairs = [("hello", "ohlol"), ("hel", "ohl"), ("lo", "ol")]
    session = TrainingSession.start(hp, pairs_dataset(pairs), cuda_fp32)
    train(session)
    save_checkpoint(session.checkpoint(), tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")

    cpu, cuda = Predictor.from_checkpoint(loaded, CPU), Predictor.from_checkpoint(loaded, cuda_fp32)

    predictions_agree(loaded, cpu, cuda)


@pytest.mark.gpu
def test_generation_on_cuda_is_reproducible_with_a_seed(text_checkpoint: Checkpoint) -> None:
    writer = Predictor.from_checkpoint(text_checkpoint, torch.device("cuda"))

    assert writer.generate("the ", 20, seed=3) == writer.generate("the ", 20, seed=3)


@pytest.mark.gpu
def test_resuming_on_cuda_continues_the_same_run(tmp_path: Path) -> None:
    # no dropout: cuDNN seeds its dropout state once per process, so only CPU runs
    # with dropout are promised to repeat exactly
    cuda = torch.device("cuda")
    hp = Hyperparameters(epochs=4, batch_size=2, validation_fraction=0.0, seed=0)
    dataset = text_dataset("abcabdabcabd", seq_len=3)
    straight = TrainingSession.start(hp, dataset, cuda)
    train(straight)
    first_half = TrainingSession.start(hp.model_copy(update={"epochs": 2}), dataset, cuda)
    train(first_half)
    save_checkpoint(first_half.checkpoint(), tmp_path / "ckpt")

    checkpoint = load_checkpoint(tmp_path / "ckpt", with_training_state=True)
    extended = dataclasses.replace(checkpoint, hyperparameters=hp)  # now 4 epochs
    resumed = TrainingSession.resume(extended, dataset, cuda)
    train(resumed)

    assert [m.loss for m in resumed.history] == pytest.approx(
        [m.loss for m in straight.history], rel=1e-4
    )
