"""``charnn store check``: every way the registry and the files can disagree, found and repaired.

A crash leaves only what nothing serves (staging leftovers, orphan directories, stale job
checkpoints); damage from outside leaves versions whose files are missing, corrupt,
swapped or joined by a planted file. ``check_store`` finds each and changes nothing;
``repair_store`` fixes them; the command prints both and exits 0 only on a clean store.

The registry runs on SQLite and on PostgreSQL (``database_url``, tests/store/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.ml.checkpoint import (
    META_FILE,
    STAGING_MARKER,
    WEIGHTS_FILE,
    Checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from app.settings import Settings, get_settings
from app.store.check import (
    Kind,
    StoreReport,
    check_store,
    remove_staging_leftovers,
    repair_store,
    summary,
)
from app.store.datasets import DatasetUpload, dataset_dir
from app.store.layout import StoreLayout, new_id
from app.store.publish import describe_version, publish_checkpoint
from app.store.registry import Registry, StoredVersion
from app.store.tables import JobRow

HOUR = 3600.0


@pytest.fixture
def layout(store_dir: Path) -> StoreLayout:
    layout = StoreLayout(store_dir)
    layout.ensure()
    return layout


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    registry = Registry.connect(database_url)
    yield registry
    registry.close()


@pytest.fixture
def publish(registry: Registry, layout: StoreLayout) -> Callable[[str, Checkpoint], StoredVersion]:
    def publish(name: str, checkpoint: Checkpoint) -> StoredVersion:
        row = publish_checkpoint(registry, layout, name, checkpoint)
        return StoredVersion(name, row.version, row.directory, row.sha256)

    return publish


def path_of(layout: StoreLayout, version: StoredVersion) -> Path:
    return layout.version_dir(version.model_name, version.directory)


def new_job(registry: Registry, model_name: str = "hello") -> JobRow:
    return registry.create_job(new_id(), model_name, {}, "cpu", epochs=10, max_attempts=3)


def staging_dir(parent: Path) -> Path:
    """What ``save_checkpoint`` leaves when killed halfway: a hidden, half-written directory."""
    path = parent / f".{new_id()}{STAGING_MARKER}{new_id()}"
    path.mkdir(parents=True)
    (path / WEIGHTS_FILE).write_bytes(b"half a file")
    return path


def findings(report: StoreReport, root: Path) -> list[tuple[str, str, str]]:
    """(kind, path in the store, version) of each problem, in the report's order."""
    return [
        (
            str(f.kind),
            str(f.path.relative_to(root)),
            f"{f.version.model_name} v{f.version.version}" if f.version else "",
        )
        for f in report.problems
    ]


class Plant:
    """A pickle that, once unpickled, creates the directory ``marker``: proof it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def plant_pickle(directory: Path, marker: Path) -> None:
    """Replace the weights by a pickle, and re-hash the JSON so that size and sha256 agree."""
    payload = pickle.dumps(Plant(marker))
    (directory / WEIGHTS_FILE).write_bytes(payload)
    meta = json.loads((directory / META_FILE).read_text())
    meta["files"][WEIGHTS_FILE] = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
    }
    (directory / META_FILE).write_text(json.dumps(meta))


# --- checking -------------------------------------------------------------------------------


def test_a_store_as_charnn_leaves_it_is_clean(
    registry: Registry,
    layout: StoreLayout,
    publish: Callable[[str, Checkpoint], StoredVersion],
    hello_model: Checkpoint,
) -> None:
    publish("hello", hello_model)
    publish("hello", hello_model)
    running = new_job(registry)
    save_checkpoint(hello_model, layout.job_checkpoint(running.id, 3))

    report = check_store(registry, layout, min_age=0)

    assert report.clean
    assert report.findings == []
    assert (report.models, report.versions, report.job_dirs) == (1, 2, 1)
    assert summary(report) == [
        f"store {layout.root}: 1 model, 2 versions, 1 job checkpoint directory"
    ]


def test_every_disagreement_is_found_then_repaired(
    registry: Registry,
    layout: StoreLayout,
    publish: Callable[[str, Checkpoint], StoredVersion],
    hello_model: Checkpoint,
    fox_model: Checkpoint,
) -> None:
    intact = publish("hello", hello_model)
    missing = publish("hello", hello_model)
    corrupt = publish("hello", hello_model)
    swapped = publish("fox", fox_model)
    planted = publish("fox", fox_model)
    shutil.rmtree(path_of(layout, missing))
    weights = path_of(layout, corrupt) / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    for name in (META_FILE, WEIGHTS_FILE):  # a whole, valid checkpoint, but not this version's
        shutil.copyfile(path_of(layout, intact) / name, path_of(layout, swapped) / name)
    (path_of(layout, planted) / "model.pkl").write_bytes(pickle.dumps({"not": "read"}))
    orphan = layout.version_dir("hello", new_id())
    save_checkpoint(hello_model, orphan)
    orphan_model = layout.version_dir("ghost", new_id())
    save_checkpoint(hello_model, orphan_model)
    staging = staging_dir(layout.model_dir("hello"))
    ended = new_job(registry)
    registry.request_cancel(ended.id)
    save_checkpoint(hello_model, layout.job_checkpoint(ended.id, 2))
    unknown_job = layout.job_dir(new_id())
    unknown_job.mkdir()
    active = new_job(registry)
    save_checkpoint(hello_model, layout.job_checkpoint(active.id, 4))
    job_staging = staging_dir(layout.job_dir(active.id))
    (layout.models / "notes.txt").write_text("someone's notes")

    report = check_store(registry, layout, min_age=0)

    rel = layout.root
    assert sorted(findings(report, rel)) == sorted(
        [
            ("missing", str(path_of(layout, missing).relative_to(rel)), "hello v2"),
            ("unverified", str(path_of(layout, swapped).relative_to(rel)), "fox v1"),
            ("unverified", str(path_of(layout, corrupt).relative_to(rel)), "hello v3"),
            ("orphan", "models/ghost", ""),
            ("orphan", str(orphan.relative_to(rel)), ""),
            ("staging", str(job_staging.relative_to(rel)), ""),
            ("staging", str(staging.relative_to(rel)), ""),
            ("stale job", f"jobs/{unknown_job.name}", ""),
            ("stale job", f"jobs/{ended.id}", ""),
            ("foreign", str((path_of(layout, planted) / "model.pkl").relative_to(rel)), ""),
            ("foreign", "models/notes.txt", ""),
        ]
    )
    assert [f.kind for f in report.problems] == sorted(
        (f.kind for f in report.problems), key=list(Kind).index
    )
    details = {f.path: f.detail for f in report.problems}
    assert details[path_of(layout, corrupt)] == (
        f"{WEIGHTS_FILE} does not match its sha256: the file is corrupted"
    )
    assert details[path_of(layout, swapped)].startswith(
        "its weights are not those the registry recorded"
    )
    assert details[layout.job_dir(ended.id)] == "checkpoints of a job that ended cancelled"

    done = repair_store(registry, layout, report)

    assert len(done) == len(report.problems)
    assert "deleted hello v2 from the registry: its directory is missing" in done
    after = check_store(registry, layout, min_age=0)
    assert after.clean, summary(after)
    assert [(v.model_name, v.version) for v in registry.stored_versions()] == [
        ("fox", 2),
        ("hello", 1),
    ]
    for version in (intact, planted):  # a foreign file goes alone: its version stays
        load_checkpoint(path_of(layout, version))
    assert sorted(p.name for p in path_of(layout, planted).iterdir()) == [META_FILE, WEIGHTS_FILE]
    assert layout.job_checkpoints(active.id) == [(4, layout.job_checkpoint(active.id, 4))]
    assert not (layout.models / "ghost").exists()
    assert sorted(p.name for p in layout.jobs.iterdir()) == [active.id]


def test_a_planted_pickle_fails_verification_and_is_never_unpickled(
    registry: Registry,
    layout: StoreLayout,
    publish: Callable[[str, Checkpoint], StoredVersion],
    hello_model: Checkpoint,
    tmp_path: Path,
) -> None:
    version = publish("hello", hello_model)
    marker = tmp_path / "the-pickle-ran"
    pickle.loads(pickle.dumps(Plant(marker)))  # armed: unpickling it does create the marker
    assert marker.is_dir()
    marker.rmdir()
    plant_pickle(path_of(layout, version), marker)

    report = check_store(registry, layout, min_age=0)

    assert findings(report, layout.root) == [
        ("unverified", str(path_of(layout, version).relative_to(layout.root)), "hello v1")
    ]
    assert report.problems[0].detail.startswith(f"{WEIGHTS_FILE} is not a valid safetensors file")
    assert not marker.exists()


def test_links_are_never_followed(
    registry: Registry,
    layout: StoreLayout,
    publish: Callable[[str, Checkpoint], StoredVersion],
    hello_model: Checkpoint,
    tmp_path: Path,
) -> None:
    version = publish("hello", hello_model)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = path_of(layout, version) / WEIGHTS_FILE
    shutil.copyfile(target, outside / WEIGHTS_FILE)  # the very same bytes, elsewhere
    target.unlink()
    target.symlink_to(outside / WEIGHTS_FILE)
    (layout.models / "elsewhere").symlink_to(outside, target_is_directory=True)

    report = check_store(registry, layout, min_age=0)
    repair_store(registry, layout, report)

    assert [(f.kind, f.detail) for f in report.problems] == [
        (Kind.UNVERIFIED, f"{WEIGHTS_FILE} is a symbolic link, not a file of the store"),
        (Kind.FOREIGN, "not a model directory"),
    ]
    assert check_store(registry, layout, min_age=0).clean
    assert sorted(p.name for p in outside.iterdir()) == [WEIGHTS_FILE]  # untouched


def test_young_leftovers_are_pending_and_left_alone(
    registry: Registry,
    layout: StoreLayout,
    publish: Callable[[str, Checkpoint], StoredVersion],
    hello_model: Checkpoint,
) -> None:
    """A publish between its rename and its commit looks like an orphan: not yet one."""
    publish("hello", hello_model)
    orphan = layout.version_dir("hello", new_id())
    save_checkpoint(hello_model, orphan)
    staging = staging_dir(layout.model_dir("hello"))

    report = check_store(registry, layout, min_age=HOUR)
    done = repair_store(registry, layout, report)

    assert report.clean
    assert [(f.kind, f.path) for f in report.pending] == [
        (Kind.ORPHAN, orphan),
        (Kind.STAGING, staging),
    ]
    assert "pending (younger than 3600 s" in "\n".join(summary(report))
    assert done == []
    assert orphan.is_dir()
    assert staging.is_dir()
    later = check_store(registry, layout, min_age=HOUR, now=os.path.getmtime(orphan) + HOUR + 1)
    assert [f.kind for f in later.problems] == [Kind.ORPHAN, Kind.STAGING]


def test_a_version_published_after_the_check_is_kept(
    registry: Registry,
    layout: StoreLayout,
    publish: Callable[[str, Checkpoint], StoredVersion],
    hello_model: Checkpoint,
) -> None:
    publish("hello", hello_model)
    in_flight = layout.version_dir("hello", new_id())
    save_checkpoint(hello_model, in_flight)
    report = check_store(registry, layout, min_age=0)
    assert [f.kind for f in report.problems] == [Kind.ORPHAN]

    registry.publish_version(  # the commit that ends its publish
        "hello", describe_version(in_flight, in_flight.name, read_meta(in_flight))
    )
    done = repair_store(registry, layout, report)

    assert done == [f"kept {in_flight.relative_to(layout.root)}: it was published meanwhile"]
    assert in_flight.is_dir()
    assert check_store(registry, layout, min_age=0).clean


def test_an_empty_registry_never_gets_the_store_wiped(
    layout: StoreLayout, hello_model: Checkpoint, tmp_path: Path
) -> None:
    """The store of one registry checked against another (a wrong CHARNN_DATABASE_URL)."""
    right = Registry.connect(f"sqlite:///{tmp_path / 'right.db'}")
    wrong = Registry.connect(f"sqlite:///{tmp_path / 'wrong.db'}")
    try:
        version = publish_checkpoint(right, layout, "hello", hello_model)

        report = check_store(wrong, layout, min_age=0)
        done = repair_store(wrong, layout, report)

        assert [f.kind for f in report.problems] == [Kind.ORPHAN]
        assert done == [
            "left models/hello alone: the registry is empty, which looks like the wrong "
            "CHARNN_DATABASE_URL (remove it by hand if not)"
        ]
        load_checkpoint(layout.version_dir("hello", version.directory))
    finally:
        right.close()
        wrong.close()


def test_old_staging_leftovers_are_removed_at_start_up(
    layout: StoreLayout, hello_model: Checkpoint
) -> None:
    old = staging_dir(layout.model_dir("hello"))
    old_job = staging_dir(layout.job_dir(new_id()))
    os.utime(old / WEIGHTS_FILE, (0, 0))
    os.utime(old, (0, 0))
    os.utime(old_job / WEIGHTS_FILE, (0, 0))
    os.utime(old_job, (0, 0))
    fresh = staging_dir(layout.model_dir("hello"))
    published = layout.version_dir("hello", new_id())
    save_checkpoint(hello_model, published)
    os.utime(published, (0, 0))  # old but whole: only `store check` judges those
    old_upload = layout.root / "datasets" / f".staging-{new_id()}"  # app.store.datasets
    old_upload.mkdir(parents=True)
    os.utime(old_upload, (0, 0))

    removed = remove_staging_leftovers(layout)

    assert sorted(removed) == sorted([old, old_job, old_upload])
    assert not old.exists()
    assert not old_job.exists()
    assert fresh.is_dir()
    assert published.is_dir()


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``run_cli(store_dir, *args)``: ``charnn store check *args`` on that store."""

    def run(store_dir: Path, *args: str) -> Any:
        monkeypatch.setenv("CHARNN_STORE_DIR", str(store_dir))
        monkeypatch.delenv("CHARNN_DATABASE_URL", raising=False)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli, ["store", "check", *args])
        finally:
            get_settings.cache_clear()

    return run


@pytest.fixture
def sqlite_store(store_dir: Path, hello_model: Checkpoint) -> tuple[StoreLayout, Registry]:
    layout = StoreLayout(store_dir)
    layout.ensure()
    registry = Registry.connect(Settings(store_dir=store_dir).registry_url)
    publish_checkpoint(registry, layout, "hello", hello_model)
    return layout, registry


def test_the_command_reports_repairs_then_finds_the_store_clean(
    run_cli: Callable[..., Any], sqlite_store: tuple[StoreLayout, Registry]
) -> None:
    layout, registry = sqlite_store
    try:
        staging = staging_dir(layout.model_dir("hello"))
        shown = staging.relative_to(layout.root)

        young = run_cli(layout.root)
        found = run_cli(layout.root, "--min-age", "0")
        repaired = run_cli(layout.root, "--min-age", "0", "--repair")
        clean = run_cli(layout.root, "--min-age", "0")
    finally:
        registry.close()

    assert young.exit_code == 0, young.output
    assert f"  staging    {shown}: an unfinished checkpoint write" in young.stdout
    assert young.stdout.endswith("the store is clean\n")
    assert found.exit_code == 1
    assert found.stdout.splitlines()[1:] == [
        "problems:",
        f"  staging    {shown}: an unfinished checkpoint write",
    ]
    assert found.stderr.splitlines() == [
        "1 problem(s) remain",
        "run `charnn store check --repair` to fix them",
    ]
    assert repaired.exit_code == 0, repaired.output
    assert repaired.stdout.splitlines()[-3:] == [
        "repaired:",
        f"  removed {shown}",
        "the store is clean (repaired)",
    ]
    assert not staging.exists()
    assert (clean.exit_code, clean.stdout.splitlines()) == (
        0,
        [
            f"store {layout.root}: 1 model, 1 version, 0 job checkpoint directories",
            "the store is clean",
        ],
    )


def test_the_command_exits_1_while_problems_remain(
    run_cli: Callable[..., Any], store_dir: Path, hello_model: Checkpoint, tmp_path: Path
) -> None:
    """Versions published through another registry: orphans that --repair will not touch."""
    layout = StoreLayout(store_dir)
    layout.ensure()
    Registry.connect(Settings(store_dir=store_dir).registry_url).close()  # empty, migrated
    other = Registry.connect(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        publish_checkpoint(other, layout, "hello", hello_model)
    finally:
        other.close()

    result = run_cli(store_dir, "--min-age", "0", "--repair")

    assert result.exit_code == 1
    assert result.stdout.splitlines()[-2:] == [
        "still:",
        "  orphan     models/hello: a model that the registry does not know",
    ]
    assert result.stderr == "1 problem(s) remain\n"
    assert (layout.models / "hello").is_dir()


def test_the_command_without_a_registry_exits_2_and_creates_none(
    run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    result = run_cli(tmp_path / "nowhere")

    assert result.exit_code == 2
    assert "no registry at" in result.stderr
    assert not (tmp_path / "nowhere").exists()


# --- datasets ---------------------------------------------------------------------------------


def upload_dataset(registry: Registry, store_dir: Path, text: bytes) -> Path:
    """A text dataset stored and registered as ``POST /datasets`` does; its directory."""
    upload = DatasetUpload(Settings(store_dir=store_dir), "text", "text", None, 0)
    try:
        upload.write(text)
        row, _ = upload.publish(registry)
    finally:
        upload.discard()
    return dataset_dir(store_dir, row.id)


def test_datasets_without_files_or_rows_are_found_then_repaired(
    registry: Registry, layout: StoreLayout
) -> None:
    """A dataset row whose files are gone fails every job that trains on it; a directory
    no row names (a crash between the rename and the row of an upload) holds disk space."""
    intact = upload_dataset(registry, layout.root, b"hello world")
    gone = upload_dataset(registry, layout.root, b"the files of this one vanish")
    shutil.rmtree(gone)
    orphan = dataset_dir(layout.root, new_id())
    orphan.mkdir()
    half_deleted = layout.root / "datasets" / f".deleted-{new_id()}"
    half_deleted.mkdir()
    (layout.root / "datasets" / "notes.txt").write_text("someone's notes")

    report = check_store(registry, layout, min_age=0)

    assert sorted(findings(report, layout.root)) == [
        ("foreign", "datasets/notes.txt", ""),
        ("missing", f"datasets/{gone.name}", ""),
        ("orphan", f"datasets/{orphan.name}", ""),
        ("staging", f"datasets/{half_deleted.name}", ""),
    ]
    done = repair_store(registry, layout, report)

    assert f"deleted dataset {gone.name} from the registry: its files are missing" in done
    assert check_store(registry, layout, min_age=0).clean
    assert [p.name for p in (layout.root / "datasets").iterdir()] == [intact.name]
    assert registry.find_dataset(intact.name) is not None
    assert registry.find_dataset(gone.name) is None
