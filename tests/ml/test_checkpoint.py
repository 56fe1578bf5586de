"""The checkpoint format: a directory of JSON + safetensors that rebuilds its own model,
written atomically and refused, with a readable reason, when anything about it is off."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from pydantic import ValidationError

from app.ml.checkpoint import (
    BEST_FILE,
    META_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    verify_weights_file,
)
from app.ml.data import pairs_dataset
from app.ml.errors import CheckpointError
from app.ml.hyperparameters import Hyperparameters
from app.ml.inference import Predictor
from app.ml.model import estimate_parameters
from app.ml.train import TrainingSession, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    """Embedding 10 -> RNN 8 x 2 -> Linear over the outputs ['h', 'l', 'o'], 3 epochs."""
    hp = Hyperparameters(epochs=3, validation_fraction=0.0, seed=0)
    session = TrainingSession.start(hp, pairs_dataset([("hello", "ohlol")]), CPU)
    train(session)
    return session.checkpoint()  # with the training state


@pytest.fixture
def saved(checkpoint: Checkpoint, tmp_path: Path) -> Path:
    save_checkpoint(checkpoint, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_a_saved_checkpoint_is_json_and_safetensors(saved: Path) -> None:
    files = sorted(p.name for p in saved.iterdir())
    assert files == [BEST_FILE, META_FILE, TRAINING_FILE, WEIGHTS_FILE]
    assert json.loads((saved / META_FILE).read_text())["format"] == "charnn-checkpoint"


def test_round_trip_keeps_everything_and_predicts_identically(
    checkpoint: Checkpoint, saved: Path
) -> None:
    loaded = load_checkpoint(saved, with_training_state=True)

    assert (loaded.config, loaded.hyperparameters, loaded.vocab) == (
        checkpoint.config,
        checkpoint.hyperparameters,
        checkpoint.vocab,
    )
    assert (loaded.task, loaded.epoch, loaded.history) == ("pairs", 3, checkpoint.history)
    assert loaded.training is not None
    before = Predictor.from_checkpoint(checkpoint, CPU)
    after = Predictor.from_checkpoint(loaded, CPU)
    assert after.predict(["hello", "he"]) == before.predict(["hello", "he"])
    assert torch.equal(after.logits([[0, 1, 2]])[0], before.logits([[0, 1, 2]])[0])


def test_training_state_is_only_read_when_asked_for(saved: Path) -> None:
    assert load_checkpoint(saved).training is None


def test_the_json_alone_can_be_read_without_the_tensors(saved: Path) -> None:
    (saved / WEIGHTS_FILE).unlink()

    assert read_meta(saved).config.hidden_size == 8


# --- refused checkpoints ------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_meta(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((directory / META_FILE).read_text())
    edit(meta)
    (directory / META_FILE).write_text(json.dumps(meta))


def rewrite_weights(directory: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Change the tensors and re-record their hash, as a careful tamperer would."""
    weights = safetensors.torch.load((directory / WEIGHTS_FILE).read_bytes())
    edit(weights)
    data = safetensors.torch.save(weights)
    (directory / WEIGHTS_FILE).write_bytes(data)
    digest = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    edit_meta(directory, lambda meta: meta["files"].update({WEIGHTS_FILE: digest}))


def set_in(meta: dict[str, Any], *keys_then_value: Any) -> None:
    *parents, last, value = keys_then_value
    for key in parents:
        meta = meta[key]
    meta[last] = value


TAMPERINGS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped-weights-byte": (
        lambda d: flip_a_byte(d / WEIGHTS_FILE),
        r"weights.safetensors does not match its sha256: the file is corrupted",
    ),
    "truncated-weights": (
        lambda d: (d / WEIGHTS_FILE).write_bytes((d / WEIGHTS_FILE).read_bytes()[:-7]),
        r"weights.safetensors is \d+ bytes but checkpoint.json says \d+",
    ),
    "missing-weights": (
        lambda d: (d / WEIGHTS_FILE).unlink(),
        r"cannot read weights.safetensors",
    ),
    "edited-sha256": (
        lambda d: edit_meta(d, lambda m: set_in(m, "files", WEIGHTS_FILE, "sha256", "0" * 64)),
        r"weights.safetensors does not match its sha256",
    ),
    "edited-hidden-size": (
        lambda d: edit_meta(d, lambda m: set_in(m, "config", "hidden_size", 9)),
        r"weights do not fit the declared architecture: .*expected \(9, 10\)",
    ),
    "bumped-format-version": (
        lambda d: edit_meta(d, lambda m: set_in(m, "format_version", 3)),
        r"checkpoint format version 3 is not supported \(this charnn reads versions 1, 2\)",
    ),
    "foreign-json": (
        lambda d: (d / META_FILE).write_text('{"model": "gpt"}'),
        r"not a charnn checkpoint",
    ),
    "json-that-is-not-json": (
        lambda d: (d / META_FILE).write_text("{'format':"),
        r"checkpoint.json is unreadable or not JSON",
    ),
    "lone-surrogate-in-vocabulary": (  # JSON can escape it; no text can hold it
        lambda d: edit_meta(d, lambda m: set_in(m, "vocab", "output", 0, "\ud800")),
        r"checkpoint.json is unreadable or not JSON: it holds text that is not valid Unicode",
    ),
    "deeply-nested-json": (
        lambda d: (d / META_FILE).write_text("[" * 100_000 + "]" * 100_000),
        r"checkpoint.json is unreadable or not JSON: it is nested too deeply",
    ),
    "invalid-vocabulary": (
        lambda d: edit_meta(d, lambda m: set_in(m, "vocab", "output", ["h", "h", "o"])),
        r"checkpoint.json does not describe a valid model: vocab.output: .*repeated",
    ),
    "nan-in-history": (  # Python's JSON reads NaN; a registry's JSON column cannot store it
        lambda d: edit_meta(d, lambda m: set_in(m, "history", 0, "loss", float("nan"))),
        r"checkpoint.json does not describe a valid model: history.0.loss: .*finite number",
    ),
    "no-json": (
        lambda d: (d / META_FILE).unlink(),
        r"no checkpoint.json in .*: not a checkpoint",
    ),
    "wrong-shape-rehashed": (
        lambda d: rewrite_weights(d, lambda w: w.update({"head.weight": torch.zeros(3, 9)})),
        r"head.weight is \(3, 9\), expected \(3, 8\)",
    ),
    "missing-tensor-rehashed": (
        lambda d: rewrite_weights(d, lambda w: w.pop("head.bias")),
        r"missing \['head.bias'\]",
    ),
    "foreign-tensor-rehashed": (
        lambda d: rewrite_weights(d, lambda w: w.update({"payload": torch.zeros(1)})),
        r"unexpected \['payload'\]",
    ),
    "flipped-training-state-byte": (
        lambda d: flip_a_byte(d / TRAINING_FILE),
        r"training.safetensors does not match its sha256",
    ),
}


@pytest.mark.parametrize(("tamper", "message"), TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_a_damaged_checkpoint_is_refused_with_the_reason(
    saved: Path, tamper: Callable[[Path], None], message: str
) -> None:
    tamper(saved)

    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved, with_training_state=True)


# --- atomic saves -------------------------------------------------------------------------


def test_saving_over_an_existing_directory_is_refused(saved: Path, checkpoint: Checkpoint) -> None:
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    with pytest.raises(CheckpointError, match="already exists; checkpoints are never overwritten"):
        save_checkpoint(checkpoint, saved)

    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_a_successful_save_leaves_no_staging_directory(saved: Path) -> None:
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]


def test_a_failed_save_leaves_nothing_behind(checkpoint: Checkpoint, tmp_path: Path) -> None:
    # the JSON is validated last, after the tensor files are already written
    impossible = dataclasses.replace(checkpoint, epoch=-1)

    with pytest.raises(ValidationError, match="epoch"):
        save_checkpoint(impossible, tmp_path / "ckpt")

    assert list(tmp_path.iterdir()) == []


# --- weights checked by their header alone -------------------------------------------------


def with_header(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def header_of(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def shifted(header: dict[str, Any], name: str, by: int) -> dict[str, Any]:
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + by, end + by]
    return header


HEADER_TAMPERINGS: dict[str, tuple[Callable[[dict[str, Any], bytes], bytes], str]] = {
    "empty": (lambda h, d: b"", r"its header length does not fit its 0 bytes"),
    "a length past the end": (
        lambda h, d: (10**9).to_bytes(8, "little") + d,
        r"its header length does not fit",
    ),
    "a header that is not JSON": (
        lambda h, d: (5).to_bytes(8, "little") + b"{'a':" + d,
        r"not a valid safetensors file: Expecting property name",
    ),
    "a deeply nested header": (
        lambda h, d: (200_000).to_bytes(8, "little") + b"[" * 100_000 + b"]" * 100_000 + d,
        r"not a valid safetensors file: it is nested too deeply",
    ),
    "a list for a tensor": (
        lambda h, d: with_header({**h, "head.bias": [1, 2]}, d),
        r"not a valid safetensors file: Input should be a valid dictionary",
    ),
    "a shape of strings": (
        lambda h, d: with_header({**h, "head.bias": {**h["head.bias"], "shape": ["3"]}}, d),
        r"not a valid safetensors file: Input should be a valid integer",
    ),
    "bytes after the tensors": (
        lambda h, d: with_header(h, d + bytes(4)),
        r"its tensors hold \d+ bytes of its \d+ bytes of data",
    ),
    "a tensor moved over another": (
        lambda h, d: with_header(shifted(h, "head.bias", -4), d),
        r"the bytes \d+\.\.\d+ of \S+ are not where a F32 tensor of shape \(\d+,\) goes",
    ),
    "float64 tensors": (
        lambda h, d: with_header({**h, "head.bias": {**h["head.bias"], "dtype": "F64"}}, d),
        r"head.bias is F64, expected F32",
    ),
}


@pytest.mark.parametrize(
    ("tamper", "message"), HEADER_TAMPERINGS.values(), ids=HEADER_TAMPERINGS.keys()
)
def test_weights_are_verified_by_their_header(
    saved: Path,
    checkpoint: Checkpoint,
    tamper: Callable[[dict[str, Any], bytes], bytes],
    message: str,
) -> None:
    verify_weights_file(checkpoint.config, saved / WEIGHTS_FILE)  # the header of a true file fits
    header, data = header_of(saved / WEIGHTS_FILE)
    (saved / WEIGHTS_FILE).write_bytes(tamper(header, data))

    with pytest.raises(CheckpointError, match=message):
        verify_weights_file(checkpoint.config, saved / WEIGHTS_FILE)


def test_a_small_file_declaring_a_huge_model_is_refused_by_arithmetic(
    saved: Path, checkpoint: Checkpoint
) -> None:
    # about 3 billion parameters, 12 GB of float32 had it been built
    huge = checkpoint.config.model_copy(
        update={"cell": "lstm", "hidden_size": 4096, "num_layers": 8, "bidirectional": True}
    )

    with pytest.raises(CheckpointError, match=r"missing \['rnn.bias_hh_l0_reverse'"):
        verify_weights_file(huge, saved / WEIGHTS_FILE)
    assert estimate_parameters(huge) > 2_900_000_000
