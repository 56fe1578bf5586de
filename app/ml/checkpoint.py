"""The checkpoint format: safetensors for tensors, JSON for everything else.

A checkpoint is a directory:

    checkpoint.json        format + version, architecture, hyperparameters, vocabularies,
                           history, and the sha256 and size of each tensor file
    weights.safetensors    the model's state dict
    training.safetensors   optimizer state and random generator states (optional;
                           present while a job trains, so it can resume)

Nothing is ever unpickled: safetensors holds raw tensors only, and the JSON is
validated by pydantic. Saving builds the directory under a hidden staging name and
renames it into place, so a reader sees a whole checkpoint or none. Loading hashes
the exact bytes it then parses and checks every tensor's shape against the model
that the JSON declares, so a corrupted, truncated or tampered checkpoint raises
``CheckpointError`` instead of serving wrong predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import safetensors.torch
import torch
from pydantic import BaseModel, Field, ValidationError, model_validator

from app.ml.data import Task
from app.ml.errors import CheckpointError
from app.ml.hyperparameters import Hyperparameters
from app.ml.metrics import EpochMetrics
from app.ml.model import ModelConfig, expected_shapes
from app.ml.vocab import Vocab

FORMAT = "charnn-checkpoint"
FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "weights.safetensors"
TRAINING_FILE = "training.safetensors"
MAX_META_BYTES = 64 * 1024 * 1024
STAGING_MARKER = ".partial-"


class FileDigest(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TrainingMeta(BaseModel):
    """The JSON half of the training state (the tensors are in training.safetensors)."""

    seed: int
    optimizer_param_groups: list[dict[str, Any]]
    optimizer_scalars: dict[str, dict[str, float | int | bool]]
    cuda_rng_states: int = Field(ge=0)


class CheckpointMeta(BaseModel):
    format: Literal["charnn-checkpoint"]
    format_version: int
    created_at: datetime
    torch_version: str
    task: Task
    config: ModelConfig
    hyperparameters: Hyperparameters
    vocab: Vocab
    epoch: int = Field(ge=0)
    history: list[EpochMetrics]
    files: dict[str, FileDigest]
    training: TrainingMeta | None = None

    @model_validator(mode="after")
    def _vocab_fits_model(self) -> Self:
        if self.config.input_size != len(self.vocab.input):
            raise ValueError(
                f"config.input_size is {self.config.input_size} but the input vocabulary "
                f"has {len(self.vocab.input)} characters"
            )
        if self.config.output_size != len(self.vocab.output):
            raise ValueError(
                f"config.output_size is {self.config.output_size} but the output vocabulary "
                f"has {len(self.vocab.output)} characters"
            )
        return self


@dataclass
class TrainingState:
    """Optimizer and random generators: what resuming needs beyond the weights."""

    seed: int
    optimizer_tensors: dict[str, dict[str, torch.Tensor]]  # param index -> name -> tensor
    optimizer_scalars: dict[str, dict[str, float | int | bool]]
    param_groups: list[dict[str, Any]]
    cpu_rng: torch.Tensor
    shuffle_rng: torch.Tensor
    cuda_rng: list[torch.Tensor]

    @classmethod
    def capture(
        cls,
        seed: int,
        optimizer: torch.optim.Optimizer,
        shuffle: torch.Generator,
        device: torch.device,
    ) -> TrainingState:
        state_dict = optimizer.state_dict()
        tensors: dict[str, dict[str, torch.Tensor]] = {}
        scalars: dict[str, dict[str, float | int | bool]] = {}
        for index, values in state_dict["state"].items():
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors.setdefault(str(index), {})[name] = value.detach().cpu().clone()
                elif value is not None:
                    scalars.setdefault(str(index), {})[name] = value
        return cls(
            seed=seed,
            optimizer_tensors=tensors,
            optimizer_scalars=scalars,
            param_groups=json.loads(json.dumps(state_dict["param_groups"])),
            cpu_rng=torch.get_rng_state(),
            shuffle_rng=shuffle.get_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        )

    def optimizer_state_dict(self) -> dict[str, Any]:
        state: dict[int, dict[str, Any]] = {}
        for index in self.optimizer_tensors.keys() | self.optimizer_scalars.keys():
            state[int(index)] = {
                **self.optimizer_scalars.get(index, {}),
                **self.optimizer_tensors.get(index, {}),
            }
        return {"state": state, "param_groups": self.param_groups}

    def tensors(self) -> dict[str, torch.Tensor]:
        flat = {
            f"optimizer.{index}.{name}": tensor
            for index, named in self.optimizer_tensors.items()
            for name, tensor in named.items()
        }
        flat["rng.cpu"] = self.cpu_rng
        flat["rng.shuffle"] = self.shuffle_rng
        flat.update({f"rng.cuda.{i}": s for i, s in enumerate(self.cuda_rng)})
        return flat

    def meta(self) -> TrainingMeta:
        return TrainingMeta(
            seed=self.seed,
            optimizer_param_groups=self.param_groups,
            optimizer_scalars=self.optimizer_scalars,
            cuda_rng_states=len(self.cuda_rng),
        )

    @classmethod
    def from_parts(cls, meta: TrainingMeta, flat: dict[str, torch.Tensor]) -> TrainingState:
        try:
            optimizer_tensors: dict[str, dict[str, torch.Tensor]] = {}
            for key, tensor in flat.items():
                if key.startswith("optimizer."):
                    _, index, name = key.split(".", 2)
                    optimizer_tensors.setdefault(index, {})[name] = tensor
            return cls(
                seed=meta.seed,
                optimizer_tensors=optimizer_tensors,
                optimizer_scalars=meta.optimizer_scalars,
                param_groups=meta.optimizer_param_groups,
                cpu_rng=flat["rng.cpu"],
                shuffle_rng=flat["rng.shuffle"],
                cuda_rng=[flat[f"rng.cuda.{i}"] for i in range(meta.cuda_rng_states)],
            )
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{TRAINING_FILE} is incomplete: {exc}") from exc


@dataclass
class Checkpoint:
    """A model and how it came to be, in memory; tensors on the CPU."""

    config: ModelConfig
    hyperparameters: Hyperparameters
    vocab: Vocab
    task: Task
    epoch: int
    history: list[EpochMetrics]
    weights: dict[str, torch.Tensor]
    training: TrainingState | None = None

    def require_training_state(self) -> TrainingState:
        if self.training is None:
            raise CheckpointError(
                "this checkpoint holds no training state (optimizer, random generators), "
                "so training cannot resume from it"
            )
        return self.training


# --- writing ------------------------------------------------------------------------------


def _write_file(path: Path, data: bytes) -> FileDigest:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return FileDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(checkpoint: Checkpoint, directory: Path) -> CheckpointMeta:
    """Write ``checkpoint`` to ``directory`` (which must not exist) atomically."""
    directory = Path(directory)
    if directory.exists():
        raise CheckpointError(f"{directory} already exists; checkpoints are never overwritten")
    staging = directory.with_name(f".{directory.name}{STAGING_MARKER}{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        meta = _write_parts(checkpoint, staging)
        _fsync_dir(staging)
        os.rename(staging, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _write_parts(checkpoint: Checkpoint, directory: Path) -> CheckpointMeta:
    weights = {k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()}
    files = {WEIGHTS_FILE: _write_file(directory / WEIGHTS_FILE, safetensors.torch.save(weights))}
    training = checkpoint.training
    if training is not None:
        data = safetensors.torch.save({k: v.contiguous() for k, v in training.tensors().items()})
        files[TRAINING_FILE] = _write_file(directory / TRAINING_FILE, data)
    meta = CheckpointMeta(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        created_at=datetime.now(UTC),
        torch_version=torch.__version__,
        task=checkpoint.task,
        config=checkpoint.config,
        hyperparameters=checkpoint.hyperparameters,
        vocab=checkpoint.vocab,
        epoch=checkpoint.epoch,
        history=checkpoint.history,
        files=files,
        training=training.meta() if training is not None else None,
    )
    # the JSON goes last: it names the hashes of the files written before it
    _write_file(directory / META_FILE, meta.model_dump_json(indent=2).encode())
    return meta


# --- reading ------------------------------------------------------------------------------


def read_meta(directory: Path) -> CheckpointMeta:
    """The validated JSON half of a checkpoint (tensor files are not read)."""
    path = Path(directory) / META_FILE
    try:
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise CheckpointError(f"{META_FILE} is {size} bytes; the limit is {MAX_META_BYTES}")
        raw = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise CheckpointError(f"no {META_FILE} in {directory}: not a checkpoint") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{META_FILE} is unreadable or not JSON: {exc}") from exc
    return parse_meta(raw)


def parse_meta(raw: Any) -> CheckpointMeta:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"not a charnn checkpoint: {META_FILE} lacks format {FORMAT!r}")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version!r} is not supported "
            f"(this charnn reads version {FORMAT_VERSION})"
        )
    try:
        return CheckpointMeta.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise CheckpointError(f"{META_FILE} does not describe a valid model: {problems}") from exc


def read_tensors(directory: Path, name: str, meta: CheckpointMeta) -> dict[str, torch.Tensor]:
    """Read one tensor file, verifying its size and sha256 against the JSON."""
    digest = meta.files.get(name)
    if digest is None:
        raise CheckpointError(f"{META_FILE} does not list {name}")
    path = Path(directory) / name
    try:
        size = path.stat().st_size
        if size != digest.size:
            raise CheckpointError(f"{name} is {size} bytes but {META_FILE} says {digest.size}")
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {name}: {exc}") from exc
    return parse_tensors(name, data, digest)


def parse_tensors(name: str, data: bytes, digest: FileDigest) -> dict[str, torch.Tensor]:
    """Verify ``data`` against its digest, then parse it: the bytes hashed are the bytes read."""
    if len(data) != digest.size:
        raise CheckpointError(f"{name} is {len(data)} bytes but {META_FILE} says {digest.size}")
    if hashlib.sha256(data).hexdigest() != digest.sha256:
        raise CheckpointError(f"{name} does not match its sha256: the file is corrupted")
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error type for bad headers
        raise CheckpointError(f"{name} is not a valid safetensors file: {exc}") from exc


def check_weights(config: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
    """Every tensor the architecture needs, with its shape, and nothing else."""
    expected = expected_shapes(config)
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    wrong = [
        f"{k} is {tuple(weights[k].shape)}, expected {tuple(shape)}"
        if weights[k].shape != shape
        else f"{k} is {weights[k].dtype}, expected {dtype}"
        for k, (shape, dtype) in expected.items()
        if k in weights and (weights[k].shape != shape or weights[k].dtype != dtype)
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            "weights do not fit the declared architecture: "
            + "; ".join(
                [f"missing {missing}"] * bool(missing)
                + [f"unexpected {unexpected}"] * bool(unexpected)
                + wrong[:5]
            )
        )


def checkpoint_from_bytes(meta_json: bytes, weights: bytes) -> Checkpoint:
    """Verify an uploaded checkpoint (its JSON and weights file) without touching disk."""
    if len(meta_json) > MAX_META_BYTES:
        raise CheckpointError(
            f"{META_FILE} is {len(meta_json)} bytes; the limit is {MAX_META_BYTES}"
        )
    try:
        raw = json.loads(meta_json)
    except ValueError as exc:
        raise CheckpointError(f"{META_FILE} is not JSON: {exc}") from exc
    meta = parse_meta(raw)
    digest = meta.files.get(WEIGHTS_FILE)
    if digest is None:
        raise CheckpointError(f"{META_FILE} does not list {WEIGHTS_FILE}")
    tensors = parse_tensors(WEIGHTS_FILE, weights, digest)
    check_weights(meta.config, tensors)
    return _from_meta(meta, tensors, None)


def _from_meta(
    meta: CheckpointMeta, weights: dict[str, torch.Tensor], training: TrainingState | None
) -> Checkpoint:
    return Checkpoint(
        config=meta.config,
        hyperparameters=meta.hyperparameters,
        vocab=meta.vocab,
        task=meta.task,
        epoch=meta.epoch,
        history=meta.history,
        weights=weights,
        training=training,
    )


def load_checkpoint(directory: Path, *, with_training_state: bool = False) -> Checkpoint:
    """Load and verify a checkpoint; the model is rebuilt from its JSON alone."""
    meta = read_meta(directory)
    weights = read_tensors(directory, WEIGHTS_FILE, meta)
    check_weights(meta.config, weights)
    training = None
    if with_training_state and meta.training is not None:
        flat = read_tensors(directory, TRAINING_FILE, meta)
        training = TrainingState.from_parts(meta.training, flat)
    return _from_meta(meta, weights, training)
