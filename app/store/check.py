"""Do the registry and the files agree? ``charnn store check`` asks, ``--repair`` fixes.

A version is served only through its registry row, and a row is committed only after
its files are whole and verified (``app.store.publish``); deleting removes the row
first, then the files. So a crash leaves only what nothing serves:

    staging     ``.<name>.partial-<id>``: a checkpoint write that never finished
    orphan      a version directory (or a whole model's) that no row names: a crash
                between the files and the row of a publish, or the row and the files
                of a delete
    stale job   epoch checkpoints of a job that ended, or that the registry does not know

Uploaded datasets (``datasets/<id>/``) likewise: an upload's or a delete's leftover
(``.staging-*``, ``.deleted-*``) is staging, a dataset directory that no row names an
orphan, and a dataset row whose ``dataset.json`` is gone is missing (every job on it
would fail); repairing forgets that row, unless a queued or running job still uses it.

Damage from outside charnn (a failing disk, a hand in the store, an intruder) shows as:

    missing     a version whose directory is gone
    unverified  a version whose checkpoint fails verification (format, size, sha256,
                shapes), or whose weights are not those the registry recorded
    foreign     anything in the store that charnn did not write, e.g. a planted
                ``model.pkl`` beside a checkpoint; charnn never reads it

Repairing deletes the rows of missing and unverified versions, with whatever is left
of their files, and removes orphans, staging leftovers, stale job checkpoints and
foreign files. A foreign file goes alone: its version verifies on its own (the JSON
names the hash of every file it uses), so it stays.

Nothing is removed merely for lacking a row while it is younger than ``min_age``:
a running service or worker may be writing it at this moment (the window between a
publish's rename and its commit). Such findings are *pending*, not problems. And
when the registry is empty but the store is not, orphans are left alone: that is a
wrong ``CHARNN_DATABASE_URL`` far more often than a store to wipe.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.errors import ConflictError, NotFoundError
from app.ml.checkpoint import (
    BEST_FILE,
    META_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    read_meta,
)
from app.ml.errors import CharnnError, CheckpointError
from app.store.datasets import META as DATASET_META
from app.store.datasets import datasets_dir
from app.store.layout import StoreLayout, is_epoch_dir, is_id, is_model_name, is_staging
from app.store.registry import Registry, StoredVersion
from app.store.tables import JobStatus

LEFTOVER_MIN_AGE_SECONDS = 600.0
CHECKPOINT_FILES = frozenset({META_FILE, WEIGHTS_FILE, TRAINING_FILE, BEST_FILE})


class Kind(StrEnum):
    MISSING = "missing"
    UNVERIFIED = "unverified"
    ORPHAN = "orphan"
    STAGING = "staging"
    STALE_JOB = "stale job"
    FOREIGN = "foreign"


ROW_KINDS = frozenset({Kind.MISSING, Kind.UNVERIFIED})
ORPHAN_KINDS = frozenset({Kind.ORPHAN, Kind.STALE_JOB})


@dataclass(frozen=True)
class Finding:
    kind: Kind
    path: Path
    detail: str
    version: StoredVersion | None = None  # the row, for missing and unverified versions
    pending: bool = False  # too young to remove: perhaps being written right now


@dataclass
class StoreReport:
    root: Path
    models: int
    versions: int
    job_dirs: int
    registry_empty: bool
    min_age: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.pending]

    @property
    def pending(self) -> list[Finding]:
        return [f for f in self.findings if f.pending]

    @property
    def clean(self) -> bool:
        return not self.problems


class StoreCheckError(CharnnError):
    """The store cannot be checked at all (no registry where the settings point)."""


# --- checking -----------------------------------------------------------------------------


def check_store(
    registry: Registry,
    layout: StoreLayout,
    *,
    min_age: float = LEFTOVER_MIN_AGE_SECONDS,
    now: float | None = None,
) -> StoreReport:
    """Compare the registry with the files in ``layout``; reads only, changes nothing."""
    scan = _Scan(layout, min_age, time.time() if now is None else now)
    # the files first, then the rows: a version published in between is seen with its row
    model_dirs, job_dirs = _entries(layout.models), _entries(layout.jobs)
    dataset_dirs = _entries(datasets_dir(layout.root))
    datasets = registry.dataset_ids()
    versions = registry.stored_versions()
    names = registry.model_names()
    statuses = registry.job_statuses([p.name for p in job_dirs])
    report = StoreReport(
        root=layout.root,
        models=len(names),
        versions=len(versions),
        job_dirs=len(job_dirs),
        registry_empty=not names
        and not datasets
        and registry.count_jobs(frozenset(JobStatus)) == 0,
        min_age=min_age,
    )
    for stored in versions:
        scan.version(stored)
    scan.model_dirs(model_dirs, names, {(v.model_name, v.directory) for v in versions})
    scan.job_dirs(job_dirs, statuses)
    scan.datasets(dataset_dirs, datasets)
    report.findings = sorted(scan.findings, key=lambda f: (list(Kind).index(f.kind), str(f.path)))
    return report


class _Scan:
    def __init__(self, layout: StoreLayout, min_age: float, now: float) -> None:
        self.layout, self.min_age, self.now = layout, min_age, now
        self.findings: list[Finding] = []

    def add(self, kind: Kind, path: Path, detail: str, *, young_ok: bool = False) -> None:
        """Record a finding; ``young_ok``: it may be another process's write in progress."""
        pending = young_ok and self.now - _newest_mtime(path) < self.min_age
        self.findings.append(Finding(kind, path, detail, pending=pending))

    def version(self, stored: StoredVersion) -> None:
        try:
            path = self.layout.version_dir(stored.model_name, stored.directory)
        except ValueError as exc:
            detail = f"the registry names no valid directory: {exc}"
            self.findings.append(Finding(Kind.MISSING, self.layout.models, detail, stored))
            return
        if not path.is_dir() or path.is_symlink():
            what = "a symbolic link" if path.is_symlink() else "missing"
            self.findings.append(Finding(Kind.MISSING, path, f"its directory is {what}", stored))
            return
        for entry in _entries(path):
            if entry.name not in CHECKPOINT_FILES:
                self.add(Kind.FOREIGN, entry, "not part of a checkpoint; never read")
        problem = _verify(path, stored)
        if problem is not None:
            self.findings.append(Finding(Kind.UNVERIFIED, path, problem, stored))

    def model_dirs(
        self, entries: list[Path], names: set[str], directories: set[tuple[str, str]]
    ) -> None:
        for entry in entries:
            if not _is_real_dir(entry) or not is_model_name(entry.name):
                self.add(Kind.FOREIGN, entry, "not a model directory")
            elif entry.name not in names:
                self.add(
                    Kind.ORPHAN, entry, "a model that the registry does not know", young_ok=True
                )
            else:
                for child in _entries(entry):
                    self.version_dir(child, (entry.name, child.name) in directories)

    def version_dir(self, path: Path, known: bool) -> None:
        if is_staging(path.name):
            self.add(Kind.STAGING, path, "an unfinished checkpoint write", young_ok=True)
        elif not _is_real_dir(path) or not is_id(path.name):
            self.add(Kind.FOREIGN, path, "not a version directory")
        elif not known:
            self.add(Kind.ORPHAN, path, "no version names this directory", young_ok=True)

    def job_dirs(self, entries: list[Path], statuses: dict[str, JobStatus]) -> None:
        for entry in entries:
            status = statuses.get(entry.name)
            if not _is_real_dir(entry) or not is_id(entry.name):
                self.add(Kind.FOREIGN, entry, "not a job directory")
            elif status is None:
                self.add(
                    Kind.STALE_JOB, entry, "a job that the registry does not know", young_ok=True
                )
            elif status.is_final:
                self.add(Kind.STALE_JOB, entry, f"checkpoints of a job that ended {status}")
            else:
                for child in _entries(entry):
                    if is_staging(child.name):
                        self.add(
                            Kind.STAGING, child, "an unfinished checkpoint write", young_ok=True
                        )
                    elif not _is_real_dir(child) or not is_epoch_dir(child.name):
                        self.add(Kind.FOREIGN, child, "not an epoch checkpoint")

    def datasets(self, entries: list[Path], registered: set[str]) -> None:
        for entry in entries:
            if entry.name.startswith((".staging-", ".deleted-")):
                self.add(
                    Kind.STAGING, entry, "an unfinished dataset upload or delete", young_ok=True
                )
            elif not _is_real_dir(entry) or not is_id(entry.name):
                self.add(Kind.FOREIGN, entry, "not a dataset directory")
            elif entry.name not in registered:
                self.add(
                    Kind.ORPHAN, entry, "a dataset that the registry does not know", young_ok=True
                )
        parent = datasets_dir(self.layout.root)
        for id_ in sorted(registered):
            if not (parent / id_ / DATASET_META).is_file():
                self.findings.append(Finding(Kind.MISSING, parent / id_, "its files are missing"))


def _verify(path: Path, stored: StoredVersion) -> str | None:
    """Why the checkpoint at ``path`` cannot serve as ``stored``; None if it can."""
    for name in CHECKPOINT_FILES:
        if (path / name).is_symlink():
            return f"{name} is a symbolic link, not a file of the store"
    try:
        load_checkpoint(path)  # format, sizes, sha256 of the bytes parsed, shapes
        recorded = read_meta(path).files[WEIGHTS_FILE].sha256
    except CheckpointError as exc:
        return str(exc)
    if recorded != stored.sha256:
        return (
            f"its weights are not those the registry recorded (sha256 {recorded[:12]}..., "
            f"registry {stored.sha256[:12]}...)"
        )
    return None


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_real_dir(path: Path) -> bool:
    """A directory, not a symbolic link to one (links are never followed)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _newest_mtime(path: Path) -> float:
    """The latest modification under ``path`` (itself included; links not followed)."""
    newest = 0.0
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in [".", *dirs, *files]:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:
                continue
    try:  # a plain file or a link: os.walk yields nothing for it
        return max(newest, path.lstat().st_mtime)
    except FileNotFoundError:
        return newest


# --- repairing ----------------------------------------------------------------------------


def repair_store(registry: Registry, layout: StoreLayout, report: StoreReport) -> list[str]:
    """Fix the problems of ``report`` (pending findings are left alone); what was done."""
    done = []
    for finding in sorted(report.problems, key=lambda f: f.kind not in ROW_KINDS):
        if finding.kind in ORPHAN_KINDS and report.registry_empty:
            done.append(
                f"left {_shown(layout.root, finding.path)} alone: the registry is empty, which "
                "looks like the wrong CHARNN_DATABASE_URL (remove it by hand if not)"
            )
            continue
        done.append(_REPAIRS[finding.kind](registry, layout, finding))
    return done


def _forget(registry: Registry, layout: StoreLayout, finding: Finding) -> str:
    if finding.version is None:  # a dataset (only versions have a StoredVersion)
        return _forget_dataset(registry, finding.path.name)
    stored = finding.version
    label = f"{stored.model_name} v{stored.version}"
    if not registry.forget_version(stored):
        return f"{label} was deleted meanwhile"
    if finding.kind is Kind.MISSING:
        return f"deleted {label} from the registry: {finding.detail}"
    return f"deleted {label} (row and files): {finding.detail}; " + _remove(layout, finding.path)


def _forget_dataset(registry: Registry, id_: str) -> str:
    try:
        registry.delete_dataset(id_)
    except NotFoundError:
        return f"dataset {id_} was deleted meanwhile"
    except ConflictError as exc:
        return f"kept dataset {id_}: {exc}"
    return f"deleted dataset {id_} from the registry: its files are missing"


def _remove_orphan(registry: Registry, layout: StoreLayout, finding: Finding) -> str:
    path = finding.path
    if path.parent == datasets_dir(layout.root):
        published = registry.find_dataset(path.name) is not None
    elif path.parent == layout.models:
        published = path.name in registry.model_names()
    else:
        published = path.name in registry.known_directories(path.parent.name)
    if published:  # between the check and now, its row was committed
        return f"kept {_shown(layout.root, path)}: it was published meanwhile"
    return _remove(layout, path)


def _remove_file(_registry: Registry, layout: StoreLayout, finding: Finding) -> str:
    return _remove(layout, finding.path)


def _remove(layout: StoreLayout, path: Path) -> str:
    try:
        if _is_real_dir(path):
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        return f"could not remove {_shown(layout.root, path)}: {exc}"
    return f"removed {_shown(layout.root, path)}"


_REPAIRS: dict[Kind, Callable[[Registry, StoreLayout, Finding], str]] = {
    Kind.MISSING: _forget,
    Kind.UNVERIFIED: _forget,
    Kind.ORPHAN: _remove_orphan,
    Kind.STAGING: _remove_file,
    Kind.STALE_JOB: _remove_file,
    Kind.FOREIGN: _remove_file,
}


# --- around it: leftovers at start-up, the registry of the settings, the summary ---------------


def remove_staging_leftovers(
    layout: StoreLayout, min_age: float = LEFTOVER_MIN_AGE_SECONDS, now: float | None = None
) -> list[Path]:
    """Remove unfinished checkpoint writes older than ``min_age``; cheap, for start-up.

    Only staging directories, which are garbage whatever the registry says; orphans
    need the registry's word, so they are left to ``charnn store check --repair``.
    """
    now = time.time() if now is None else now
    removed = []
    for path in layout.staging_dirs():
        if now - _newest_mtime(path) >= min_age:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def open_registry(url: str) -> Registry:
    """The registry at ``url``, which must exist already (a check never creates one)."""
    parsed = make_url(url)
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if database not in (None, "", ":memory:") and not Path(str(database)).is_file():
        raise StoreCheckError(
            f"no registry at {database}: set CHARNN_STORE_DIR (or CHARNN_DATABASE_URL) "
            "to the store of the service"
        )
    registry = Registry.connect(url, migrate=False)
    try:
        registry.model_names()
    except SQLAlchemyError as exc:
        registry.close()
        shown = parsed.render_as_string(hide_password=True)
        raise StoreCheckError(
            f"cannot read the registry at {shown}: {type(exc).__name__}; is it charnn's, "
            "and has the service run once to create or upgrade it?"
        ) from exc
    return registry


def summary(report: StoreReport, repaired: list[str] | None = None) -> list[str]:
    """The report as lines of text, for people."""
    lines = [
        f"store {report.root}: {_count(report.models, 'model')}, "
        f"{_count(report.versions, 'version')}, "
        f"{_count(report.job_dirs, 'job checkpoint directory', 'job checkpoint directories')}"
    ]
    if report.problems:
        lines.append("problems:")
        lines += [finding_line(report, f) for f in report.problems]
    if report.pending:
        lines.append(
            f"pending (younger than {report.min_age:g} s: perhaps still being written, "
            "left alone; --min-age 0 once nothing runs on the store):"
        )
        lines += [finding_line(report, f) for f in report.pending]
    if repaired:
        lines.append("repaired:")
        lines += [f"  {action}" for action in repaired]
    return lines


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def finding_line(report: StoreReport, finding: Finding) -> str:
    version = finding.version
    label = f" {version.model_name} v{version.version}" if version else ""
    shown = _shown(report.root, finding.path)
    return f"  {finding.kind:<10}{label} {shown}: {finding.detail}"


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
