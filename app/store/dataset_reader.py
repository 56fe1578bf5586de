"""A stored dataset as the engine's ``Dataset``: what a worker reads, on any machine.

A text dataset's ids are memory-mapped, never read whole: its windows are gathered from
the map batch by batch (``app.ml.data.TextWindows``). Rows (pairs) are read whole, as
inline pairs are, within the limits checked when the job was submitted.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.ml.data import Dataset, TextWindows, classify_dataset, pairs_dataset
from app.ml.errors import DataError
from app.ml.vocab import Vocab
from app.store.corpus import IDS_DTYPE, ROWS, TEXT_IDS
from app.store.datasets import DatasetMeta, dataset_dir, read_meta


def load_dataset(
    store_dir: Path, id_: str, seq_len: int, vocab: Vocab | None
) -> tuple[DatasetMeta, Dataset]:
    """A stored dataset as the engine's Dataset; a text one reads a memory map."""
    meta = read_meta(store_dir, id_)
    directory = dataset_dir(store_dir, id_)
    if meta.kind == "text":
        return meta, _text(meta, directory, seq_len, vocab)
    if vocab is not None:
        _check_covers(meta, vocab)
    if meta.kind == "pairs":
        with (directory / ROWS).open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines]
        return meta, pairs_dataset([(r["input"], r["target"]) for r in rows], vocab)
    with (directory / ROWS).open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    return meta, classify_dataset([(r["input"], r["label"]) for r in rows], vocab)


def _check_covers(meta: DatasetMeta, vocab: Vocab) -> None:
    """Every character and label of a rows dataset is in ``vocab``: refused naming the
    vocabulary (a row's position would name a field of inline data the job does not have)."""
    wanted = {"input": (meta.input_chars, vocab.input, "characters")}
    if meta.kind == "pairs":
        wanted["output"] = (meta.output_chars, vocab.output or [], "characters")
    else:
        wanted["labels"] = (meta.labels, vocab.labels or [], "labels")
    for name, (needed, given, what) in wanted.items():
        missing = sorted(set(needed) - set(given))
        if missing:
            shown = repr("".join(missing)[:50]) if what == "characters" else repr(missing[:10])
            raise DataError(
                "vocab",
                f"{name} does not cover the dataset's {what} {shown}",  # (train or evaluate)
            )


def map_ids(path: Path) -> npt.NDArray[np.uint16]:
    """The ids file as a read-only array over a memory map. Batches read windows at random
    places: MADV_RANDOM keeps the kernel from reading ahead around each one, which would
    page in (and count in the worker's RSS) far more of the file than is used."""
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=IDS_DTYPE)
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # outlives the fd
    if hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS
        mapped.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mapped, dtype=IDS_DTYPE)


def _text(meta: DatasetMeta, directory: Path, seq_len: int, vocab: Vocab | None) -> Dataset:
    ids = map_ids(directory / TEXT_IDS)
    own = Vocab(input=meta.input_chars, output=meta.output_chars)
    if vocab is None:
        return Dataset("text", own, TextWindows(ids, seq_len, own))
    if not vocab.is_shared:
        raise DataError("vocab", "a text model reads its own output: input and output must match")
    missing = sorted(set(meta.input_chars) - set(vocab.input))
    if missing:
        raise DataError(
            "vocab",
            f"does not cover the dataset's characters {''.join(missing)[:50]!r}; "
            "add them or leave vocab out",
        )
    table = np.array([vocab.input.index(c) for c in meta.input_chars], dtype=np.int64)
    return Dataset("text", vocab, TextWindows(ids, seq_len, vocab, table=table))
