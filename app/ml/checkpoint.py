"""The checkpoint format: safetensors for tensors, JSON for everything else.

A checkpoint is a directory:

    checkpoint.json        format + version, architecture, hyperparameters, vocabularies,
                           history, and the sha256 and size of each tensor file
    weights.safetensors    the model's state dict
    training.safetensors   optimizer state and random generator states (optional;
                           present while a job trains, so it can resume)
    best.safetensors       the weights of the best validation epoch so far (with
                           training.safetensors only; a published version's weights
                           are already its best)

Format version 2 added the best epoch, why training stopped, and where within an
epoch a job's checkpoint was taken (steps, the unfinished epoch's running sums, the
validation watch), so a checkpoint taken mid-epoch resumes exactly. Version 1
checkpoints still load: they were taken at epoch ends, and their best is their last.

Nothing is ever unpickled: safetensors holds raw tensors only, and the JSON is
validated by pydantic. Saving builds the directory under a hidden staging name and
renames it into place, so a reader sees a whole checkpoint or none. Loading hashes
the exact bytes it then parses and checks every tensor's shape against the model
that the JSON declares, so a corrupted, truncated or tampered checkpoint raises
``CheckpointError`` instead of serving wrong predictions.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, Self

import safetensors.torch
import torch
from pydantic import (
    BaseModel,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from app.ml.data import Task
from app.ml.errors import CheckpointError, StorageError
from app.ml.hyperparameters import Hyperparameters
from app.ml.metrics import EpochMetrics, StopReason, TallySums
from app.ml.model import ModelConfig, expected_shapes
from app.ml.schedule import ValidationWatch
from app.ml.vocab import Vocab

FORMAT = "charnn-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "weights.safetensors"
TRAINING_FILE = "training.safetensors"
BEST_FILE = "best.safetensors"
MAX_META_BYTES = 64 * 1024 * 1024
STAGING_MARKER = ".partial-"


class FileDigest(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class LoopPosition(BaseModel):
    """Where the loop stood: steps taken, the unfinished epoch, the validation watch.

    ``batch_in_epoch`` batches of epoch ``epoch + 1`` are done and summed in ``tally``;
    the shuffle generator's state saved with it is the one that epoch's order was drawn
    from, so the order is drawn again and those batches skipped.
    """

    step: int = Field(0, ge=0)
    batch_in_epoch: int = Field(0, ge=0)
    trained_seconds: float = Field(0.0, ge=0)
    epoch_seconds: float = Field(0.0, ge=0)
    tally: TallySums | None = None
    watch: ValidationWatch = Field(default_factory=ValidationWatch)


class TrainingMeta(BaseModel):
    """The JSON half of the training state (the tensors are in training.safetensors)."""

    seed: int
    optimizer_param_groups: list[dict[str, Any]]
    optimizer_scalars: dict[str, dict[str, float | int | bool]]
    cuda_rng_states: int = Field(ge=0)
    loop: LoopPosition = Field(default_factory=LoopPosition)  # version 1: an epoch's end


class CheckpointMeta(BaseModel):
    format: Literal["charnn-checkpoint"]
    format_version: int
    created_at: datetime
    torch_version: str
    task: Task
    config: ModelConfig
    hyperparameters: Hyperparameters
    vocab: Vocab
    # the registry counts a version's epochs in a 32-bit integer (PostgreSQL's INTEGER)
    epoch: int = Field(ge=0, le=2**31 - 1)
    history: list[EpochMetrics]
    files: dict[str, FileDigest]
    training: TrainingMeta | None = None
    best_epoch: int | None = Field(None, ge=1)  # null: version 1, or no epoch yet
    stop_reason: StopReason | None = None  # null while training, and in version 1

    @model_validator(mode="after")
    def _vocab_fits_model(self) -> Self:
        if self.config.input_size != len(self.vocab.input):
            raise ValueError(
                f"config.input_size is {self.config.input_size} but the input vocabulary "
                f"has {len(self.vocab.input)} characters"
            )
        if self.config.output_size != self.vocab.output_size:
            raise ValueError(
                f"config.output_size is {self.config.output_size} but the output vocabulary "
                f"has {self.vocab.output_size} entries"
            )
        return self

    @model_validator(mode="after")
    def _classifier_has_labels(self) -> Self:
        """A classifier's task, head and labels come together, or not at all."""
        kinds = {self.task == "classify", self.config.head == "sequence"}
        kinds.add(self.vocab.labels is not None)
        if len(kinds) != 1:
            raise ValueError(
                f"task {self.task!r}, config.head {self.config.head!r} and vocab "
                f"{'labels' if self.vocab.labels is not None else 'output'} disagree: a "
                "classifier has task 'classify', head 'sequence' and vocab.labels"
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
    loop: LoopPosition = field(default_factory=LoopPosition)
    best_weights: dict[str, torch.Tensor] | None = None

    @classmethod
    def capture(
        cls,
        seed: int,
        optimizer: torch.optim.Optimizer,
        shuffle_state: torch.Tensor,
        device: torch.device,
        loop: LoopPosition,
        best_weights: dict[str, torch.Tensor] | None,
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
            shuffle_rng=shuffle_state,
            cuda_rng=torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            loop=loop,
            best_weights=best_weights,
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
            loop=self.loop,
        )

    @classmethod
    def from_parts(
        cls,
        meta: TrainingMeta,
        flat: dict[str, torch.Tensor],
        best_weights: dict[str, torch.Tensor] | None = None,
    ) -> TrainingState:
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
                loop=meta.loop,
                best_weights=best_weights,
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
    best_epoch: int | None = None
    stop_reason: StopReason | None = None

    def require_training_state(self) -> TrainingState:
        if self.training is None:
            raise CheckpointError(
                "this checkpoint holds no training state (optimizer, random generators), "
                "so training cannot resume from it"
            )
        return self.training


# --- writing ------------------------------------------------------------------------------

# what the disk says when it will take no more from us, in words an operator acts on
STORAGE_ERRNOS = {
    errno.ENOSPC: "is full",
    errno.EDQUOT: "is over its quota",
    errno.EROFS: "is read-only",
    errno.EACCES: "is not writable by this process",
    errno.EPERM: "is not writable by this process",
}


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Raise the disk's refusals inside as ``StorageError``s that say what to do."""
    try:
        yield
    except OSError as exc:
        reason = STORAGE_ERRNOS.get(exc.errno or 0)
        if reason is None:
            raise
        raise StorageError(
            f"cannot write {what}: the disk {reason} ({exc.strerror}); "
            "free space or make the store writable, then try again"
        ) from exc


def write_file(path: Path, data: bytes) -> FileDigest:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return FileDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def fsync_dir(path: Path) -> None:
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
    try:
        with storage_errors(f"a checkpoint to {directory.parent.name}"):
            staging.mkdir(parents=True)
            meta = _write_parts(checkpoint, staging)
            fsync_dir(staging)
            os.rename(staging, directory)
            fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _write_parts(checkpoint: Checkpoint, directory: Path) -> CheckpointMeta:
    weights = {k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()}
    files = {WEIGHTS_FILE: write_file(directory / WEIGHTS_FILE, safetensors.torch.save(weights))}
    training = checkpoint.training
    if training is not None:
        data = safetensors.torch.save({k: v.contiguous() for k, v in training.tensors().items()})
        files[TRAINING_FILE] = write_file(directory / TRAINING_FILE, data)
        if training.best_weights is not None:
            best = {k: v.detach().cpu().contiguous() for k, v in training.best_weights.items()}
            files[BEST_FILE] = write_file(directory / BEST_FILE, safetensors.torch.save(best))
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
        best_epoch=checkpoint.best_epoch,
        stop_reason=checkpoint.stop_reason,
    )
    # the JSON goes last: it names the hashes of the files written before it
    write_file(directory / META_FILE, meta.model_dump_json(indent=2).encode())
    return meta


# --- reading ------------------------------------------------------------------------------


def read_meta(directory: Path) -> CheckpointMeta:
    """The validated JSON half of a checkpoint (tensor files are not read)."""
    path = Path(directory) / META_FILE
    try:
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise CheckpointError(f"{META_FILE} is {size} bytes; the limit is {MAX_META_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"no {META_FILE} in {directory}: not a checkpoint") from exc
    except OSError as exc:
        raise CheckpointError(f"{META_FILE} is unreadable or not JSON: {exc}") from exc
    return parse_meta(parse_json(data, f"{META_FILE} is unreadable or not JSON"))


def parse_json(data: bytes, problem: str) -> Any:
    """``data`` as JSON that can be stored again, or a ``CheckpointError`` naming ``problem``.

    Python's parser takes what no store can write back: lone surrogates ("\\ud800" is
    not a character of any encoding) and nesting deep enough to exhaust the stack.
    """
    try:
        raw = json.loads(data)
        json.dumps(raw, ensure_ascii=False).encode()  # a lone surrogate cannot be encoded
    except UnicodeError as exc:
        raise CheckpointError(f"{problem}: it holds text that is not valid Unicode") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{problem}: it is nested too deeply") from exc
    except ValueError as exc:
        raise CheckpointError(f"{problem}: {exc}") from exc
    return raw


def parse_meta(raw: Any) -> CheckpointMeta:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"not a charnn checkpoint: {META_FILE} lacks format {FORMAT!r}")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint format version {version!r} is not supported "
            f"(this charnn reads versions {', '.join(map(str, READABLE_VERSIONS))})"
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
    check_digest(name, FileDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data)), digest)
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error type for bad headers
        raise CheckpointError(f"{name} is not a valid safetensors file: {exc}") from exc


Found = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, safetensors dtype)
# torch's dtypes as safetensors names them (its header's "dtype"), with their widths
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
WIDTHS = {name: dtype.itemsize for dtype, name in SAFETENSORS_DTYPES.items()}
MAX_HEADER_BYTES = 1024 * 1024  # charnn's largest model names fewer than 100 tensors


def dtype_name(dtype: torch.dtype) -> str:
    return SAFETENSORS_DTYPES.get(dtype, str(dtype))


def check_fit(config: ModelConfig, found: Found) -> None:
    """Every tensor the architecture needs, with its shape and dtype, and nothing else.

    The expected shapes are arithmetic on ``config`` (``expected_shapes``): nothing
    is built, so a small file that declares a huge model costs nothing to refuse.
    """
    expected = {
        k: (shape, dtype_name(dtype)) for k, (shape, dtype) in expected_shapes(config).items()
    }
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = [
        f"{k} is {found[k][0]}, expected {shape}"
        if found[k][0] != shape
        else f"{k} is {found[k][1]}, expected {dtype}"
        for k, (shape, dtype) in expected.items()
        if k in found and found[k] != (shape, dtype)
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            "weights do not fit the declared architecture: "
            + "; ".join(
                [f"missing {missing[:5]}"] * bool(missing)
                + [f"unexpected {unexpected[:5]}"] * bool(unexpected)
                + wrong[:5]
            )
        )


def check_weights(config: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
    check_fit(config, {k: (tuple(v.shape), dtype_name(v.dtype)) for k, v in weights.items()})


Offset = Annotated[StrictInt, Field(ge=0)]  # JSON lists become tuples, "7" stays a string


class HeaderEntry(BaseModel):
    """One tensor in a safetensors header: where its bytes lie after the header."""

    dtype: StrictStr
    shape: tuple[Offset, ...]
    data_offsets: tuple[Offset, Offset]


HEADER = TypeAdapter(dict[str, HeaderEntry])


def read_header(handle: BinaryIO, size: int, name: str) -> tuple[dict[str, HeaderEntry], int]:
    """The tensor table of a safetensors file of ``size`` bytes, and its data's size.

    The format: an 8-byte little-endian length, that many bytes of JSON, then the
    data; only the first two are read.
    """
    invalid = f"{name} is not a valid safetensors file"
    length = int.from_bytes(handle.read(8), "little") if size >= 8 else -1
    if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
        raise CheckpointError(f"{invalid}: its header length does not fit its {size} bytes")
    raw = parse_json(handle.read(length), invalid)
    if isinstance(raw, dict):
        raw.pop("__metadata__", None)  # free-form strings, unused
    try:
        return HEADER.validate_python(raw), size - 8 - length
    except ValidationError as exc:
        raise CheckpointError(f"{invalid}: {exc.errors()[0]['msg']}") from exc


def check_header(
    config: ModelConfig, header: dict[str, HeaderEntry], data_size: int, name: str
) -> None:
    """The header names the architecture's tensors, and their bytes tile the data exactly."""
    check_fit(config, {k: (e.shape, e.dtype) for k, e in header.items()})
    position = 0  # each tensor must start where the one before it ended
    for key, entry in sorted(header.items(), key=lambda item: item[1].data_offsets):
        begin, end = entry.data_offsets
        if begin != position or end - begin != math.prod(entry.shape) * WIDTHS[entry.dtype]:
            raise CheckpointError(
                f"{name} is not a valid safetensors file: the bytes {begin}..{end} of "
                f"{key} are not where a {entry.dtype} tensor of shape {entry.shape} goes"
            )
        position = end
    if position != data_size:
        raise CheckpointError(
            f"{name} is not a valid safetensors file: its tensors hold {position} bytes "
            f"of its {data_size} bytes of data"
        )


def verify_weights_file(config: ModelConfig, path: Path) -> None:
    """A weights file fits ``config``, by its header alone: no tensor is loaded."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        header, data_size = read_header(handle, size, WEIGHTS_FILE)
    check_header(config, header, data_size, WEIGHTS_FILE)


def parse_upload(meta_json: bytes) -> CheckpointMeta:
    """The JSON of an uploaded checkpoint, validated; its files are checked later."""
    meta = parse_meta(parse_json(meta_json, f"{META_FILE} is not JSON"))
    if WEIGHTS_FILE not in meta.files:
        raise CheckpointError(f"{META_FILE} does not list {WEIGHTS_FILE}")
    return meta


def check_digest(name: str, received: FileDigest, declared: FileDigest) -> None:
    """The bytes received are those the JSON describes."""
    if received.size != declared.size:
        raise CheckpointError(
            f"{name} is {received.size} bytes but {META_FILE} says {declared.size}"
        )
    if received.sha256 != declared.sha256:
        raise CheckpointError(f"{name} does not match its sha256: the file is corrupted")


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
        best_epoch=meta.best_epoch,
        stop_reason=meta.stop_reason,
    )


def load_checkpoint(directory: Path, *, with_training_state: bool = False) -> Checkpoint:
    """Load and verify a checkpoint; the model is rebuilt from its JSON alone."""
    meta = read_meta(directory)
    weights = read_tensors(directory, WEIGHTS_FILE, meta)
    check_weights(meta.config, weights)
    training = None
    if with_training_state and meta.training is not None:
        flat = read_tensors(directory, TRAINING_FILE, meta)
        best = None
        if BEST_FILE in meta.files:
            best = read_tensors(directory, BEST_FILE, meta)
            check_weights(meta.config, best)
        training = TrainingState.from_parts(meta.training, flat, best)
    return _from_meta(meta, weights, training)
