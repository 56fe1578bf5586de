"""A stored text dataset trains in bounded memory: read once into ids, memory-mapped after.

Bounded is measured here, as anonymous memory (RssAnon: the pages of the mapped file the
kernel may drop again are not the process's own), while every batch of an epoch is read.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import torch

from app.errors import UploadTooLargeError
from app.ml.data import batches, split
from app.settings import Settings
from app.store.corpus import scan_text, write_text_ids
from app.store.dataset_reader import load_dataset
from app.store.datasets import (
    DatasetMeta,
    DatasetUpload,
    dataset_dir,
    dataset_id,
    read_meta,
    remove_dataset_files,
)
from app.store.registry import Registry
from tests.conftest import proc_status_mib

CHARACTERS = 20_000_000
ID = "a" * 32


def random_words(path: Path, characters: int) -> None:
    rng = random.Random(0)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(2000)
    ]
    with path.open("w") as out:
        written = 0
        while written < characters:
            line = " ".join(rng.choices(words, k=1000)) + ".\n"
            out.write(line)
            written += len(line)


def store_text(store_dir: Path, source: Path) -> None:
    """What an upload leaves in the store for ``source``, written as POST /datasets does."""
    directory = dataset_dir(store_dir, ID)
    directory.mkdir(parents=True)
    summary = scan_text(source)
    write_text_ids(source, directory / "ids.u16", summary.input_chars)
    meta = DatasetMeta(
        id=ID,
        kind="text",
        format="text",
        name=None,
        sha256="0" * 64,
        size_bytes=source.stat().st_size,
        characters=summary.characters,
        examples=0,
        input_chars=summary.input_chars,
        output_chars=summary.output_chars,
        labels=[],
    )
    (directory / "dataset.json").write_text(meta.model_dump_json())


def test_an_epoch_over_a_stored_text_reads_its_windows_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "corpus.txt"
    random_words(source, CHARACTERS)
    store_text(tmp_path / "store", source)  # the API's work (in chunks), not the worker's
    before = proc_status_mib(os.getpid(), "RssAnon")
    _, dataset = load_dataset(tmp_path / "store", ID, seq_len=100, vocab=None)
    train, _ = split(dataset.examples, 0.1, seed=0)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    read = sum(int(batch.lengths.sum()) for batch in batches(train, order, 64))
    grown = proc_status_mib(os.getpid(), "RssAnon") - before

    assert read == train.characters > 0.89 * CHARACTERS
    # inline, the windows would be (N, 100) int64 inputs and targets: 320 MB, and a
    # Python string per window besides
    as_tensors_mib = 2 * 8 * CHARACTERS / 2**20
    assert grown < as_tensors_mib / 10, f"{grown:.0f} MiB"


def test_the_same_file_uploaded_while_it_is_deleted_keeps_its_files(tmp_path: Path) -> None:
    """A delete forgets the row, then moves the files aside. The same file uploaded in
    between finds no row, finds the directory (so keeps none of its own) and registers it
    again: the delete must not then take the files from under the new row."""
    store = tmp_path / "store"
    registry = Registry.connect(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        first = stored_upload(store, b"hello world")
        first.publish(registry)
        first.discard()
        again = stored_upload(store, b"hello world")
        id_ = dataset_id("text", "text", hashlib.sha256(b"hello world").hexdigest())

        registry.delete_dataset(id_)  # the delete's first step ...
        row, created = again.publish(registry)  # ... the upload between its two ...
        remove_dataset_files(store, id_, registry)  # ... and its second
        again.discard()

        assert (row.id, created) == (id_, True)
        assert registry.find_dataset(id_) is not None
        assert read_meta(store, id_).sha256 == hashlib.sha256(b"hello world").hexdigest()
        assert [p.name for p in (store / "datasets").iterdir()] == [id_]  # no leftovers
    finally:
        registry.close()


def stored_upload(store: Path, body: bytes) -> DatasetUpload:
    upload = DatasetUpload(Settings(store_dir=store), "text", "text", None, 0)
    upload.write(body)
    return upload


def test_uploads_received_at_once_stay_within_the_stores_limit_together(tmp_path: Path) -> None:
    """Each upload learns the store's room when it starts; two at once both had it all."""
    store = tmp_path / "store"
    settings = Settings(store_dir=store, max_datasets_bytes=3000)
    registry = Registry.connect(f"sqlite:///{tmp_path / 'registry.db'}")
    uploads = [DatasetUpload(settings, "text", "text", None, 0) for _ in range(2)]
    try:
        for upload, letter in zip(uploads, "ab", strict=True):
            upload.reserve(2000)  # each alone fits
            upload.write(letter.encode() * 1000 + b"xy" * 500)
        uploads[0].publish(registry)
        with pytest.raises(UploadTooLargeError, match="would pass 3000 bytes in all"):
            uploads[1].publish(registry)
        assert registry.dataset_bytes() == 2000
    finally:
        for upload in uploads:
            upload.discard()
        registry.close()
