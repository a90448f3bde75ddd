"""Reading and writing a run folder through its records (scalefit.store.records).

Every JSON file is replaced whole (scalefit.atomic), so a process killed at any instant leaves the old
version or the new one. The metrics log is the exception by design: it grows line by line, flushed
after each, so a kill can cut its last line. Readers tell that cut (expected, the line is dropped)
from damage elsewhere (reported): `read_metrics` raises on damage, for the trainer, which must not
resume on a log it cannot trust; `scan_metrics` lists it, for the run table, which must show every
run it can. `truncate_metrics` cuts the log back to a checkpoint on resume, so the finished log has
every logged step exactly once.

`run_status` is the one rule for the state of a folder, used by the sweep (what to train) and by the
run table (its status column).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, TypeVar

from scalefit.atomic import TMP_SUFFIX, atomic_write_bytes, read_json, write_json
from scalefit.store.records import (CHECKPOINT_FILE, DIVERGED_ASIDE, LOCK_FILE, METRICS_FILE, PLAN_FILE, SPEC_FILE,
                                    SUMMARY_FILE, TIMING_FILE, MetricRecord, PlanRecord, RunStatus, RunSummary,
                                    SpecRecord, SweepIndex, TimingRecord, sweep_index_file)

_R = TypeVar("_R")


class RecordError(ValueError):
    """A run-folder file that does not read as its record; the message names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)  # the file
        self.reason = reason  # why it does not read, without the file name


def _read(path: Path, cls: type[_R]) -> _R:
    try:
        d = read_json(path)
    except ValueError as e:  # read_json names the file; the reason is what follows it
        raise RecordError(path, str(e).removeprefix(f"{path}: ")) from None
    try:
        return cls.from_dict(d)
    except KeyError as e:
        raise RecordError(path, f"not a {cls.__name__}: no {e.args[0]} key") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise RecordError(path, f"not a {cls.__name__}: {e}") from None


def read_spec(run_dir: Path) -> SpecRecord:
    """spec.json of ``run_dir``; RecordError when it does not read, FileNotFoundError when absent."""
    return _read(Path(run_dir) / SPEC_FILE, SpecRecord)


def write_spec(run_dir: Path, spec: SpecRecord) -> Path:
    """Write spec.json atomically."""
    return write_json(Path(run_dir) / SPEC_FILE, spec.to_dict())


def read_summary(run_dir: Path) -> RunSummary:
    """summary.json of ``run_dir``; RecordError when it does not read, FileNotFoundError when absent."""
    return _read(Path(run_dir) / SUMMARY_FILE, RunSummary)


def write_summary(run_dir: Path, summary: RunSummary) -> Path:
    """Write summary.json atomically (last: its presence marks the run finished)."""
    return write_json(Path(run_dir) / SUMMARY_FILE, summary.to_dict())


def read_plan(run_dir: Path) -> PlanRecord:
    """plan.json of ``run_dir``; RecordError when it does not read, FileNotFoundError when absent."""
    return _read(Path(run_dir) / PLAN_FILE, PlanRecord)


def write_plan(run_dir: Path, plan: PlanRecord) -> Path:
    """Write plan.json atomically."""
    return write_json(Path(run_dir) / PLAN_FILE, plan.to_dict())


def read_timing(run_dir: Path) -> TimingRecord:
    """timing.json of ``run_dir``; RecordError when it does not read, FileNotFoundError when absent."""
    return _read(Path(run_dir) / TIMING_FILE, TimingRecord)


def write_timing(run_dir: Path, timing: TimingRecord) -> Path:
    """Write timing.json atomically."""
    return write_json(Path(run_dir) / TIMING_FILE, timing.to_dict())


def write_sweep_index(store: Path, index: SweepIndex) -> Path:
    """Write ``<store>/sweep-<name>.json`` atomically, unless it holds this index already (so running a
    finished sweep again writes nothing, and works on a read-only store); removes what a kill left of an
    earlier write."""
    path = Path(store) / sweep_index_file(index.name)
    cut = [f for f in Path(store).glob(f"{path.name}.*{TMP_SUFFIX}") if f.is_file()]  # writes a kill cut
    try:
        if not cut and path.is_file() and read_json(path) == index.to_dict():
            return path
    except ValueError:
        pass  # a damaged index is replaced
    # Every writer of a store's index holds the store's lock, so a temporary file seen under it is garbage.
    with locked(store, wait=True):
        for f in Path(store).glob(f"{path.name}.*{TMP_SUFFIX}"):
            f.unlink(missing_ok=True)
        return write_json(path, index.to_dict())


@dataclass(frozen=True)
class BadLine:
    """A metrics.jsonl line that is not a record."""

    number: int  # 1-based line number
    cut: bool  # the last line with no newline after it: a write cut by a kill, not damage
    json_error: bool  # the line is not JSON at all (else JSON that is not a metrics record)
    reason: str  # what is wrong, for messages


@dataclass(frozen=True)
class MetricsScan:
    """Everything a metrics.jsonl holds: the records in file order and the lines that are not records."""

    records: tuple[MetricRecord, ...]  # every line that reads as a record
    bad: tuple[BadLine, ...]  # every other non-blank line


def _lines(path: Path) -> Iterator[tuple[int, bytes, MetricRecord | BadLine]]:
    """(line number, raw line, its record or why it is not one) for each non-blank line of the log."""
    raw = path.read_bytes() if path.exists() else b""
    lines = raw.split(b"\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cut = i == len(lines) and not raw.endswith(b"\n")
        try:
            obj = json.loads(line)
        except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
            yield i, line, BadLine(i, cut, True, f"not valid JSON ({e})")
            continue
        try:
            yield i, line, MetricRecord.from_dict(obj)
        except ValueError as e:
            yield i, line, BadLine(i, cut, False, str(e))


def scan_metrics(path: Path) -> MetricsScan:
    """Every record of a metrics.jsonl (none when it is absent) and every line that is not one."""
    records, bad = [], []
    for _, _, got in _lines(Path(path)):
        (records if isinstance(got, MetricRecord) else bad).append(got)
    return MetricsScan(tuple(records), tuple(bad))


def _strict(path: Path) -> Iterator[tuple[bytes, MetricRecord]]:
    for i, line, got in _lines(path):
        if isinstance(got, BadLine):
            if got.cut:
                return  # the last line, cut mid-write: the resumed run writes it again
            what = "not valid JSON" if got.json_error else "not a valid metrics record"
            raise ValueError(f"{path}: line {i} is {what}")
        yield line, got


def read_metrics(path: Path) -> list[MetricRecord]:
    """Records of a metrics.jsonl (none when it is absent); a half-written last line (a kill) is dropped.

    A bad line anywhere else means the file was damaged, not interrupted: ValueError naming its number.
    """
    return [rec for _, rec in _strict(Path(path))]


def truncate_metrics(path: Path, last_step: int) -> list[MetricRecord]:
    """Keep only the lines of records with ``step <= last_step`` (atomically, byte for byte) and return
    those records.

    Called on resume, so the steps between the checkpoint and the interruption are logged once, by the
    resumed run, and never twice.
    """
    path = Path(path)
    kept = [(line, rec) for line, rec in _strict(path) if rec.step <= last_step]
    atomic_write_bytes(path, b"".join(line + b"\n" for line, _ in kept))
    return [rec for _, rec in kept]


class MetricsLog:
    """The trainer's append-only handle on metrics.jsonl: one JSON line per record, flushed at once, so a
    reader (or a kill) sees whole lines and at most a cut last one."""

    def __init__(self, run_dir: Path) -> None:
        self._file: IO[str] = open(Path(run_dir) / METRICS_FILE, "a")

    def append(self, record: MetricRecord) -> None:
        """Write ``record`` as one line and flush it."""
        self._file.write(json.dumps(record.to_dict()) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_status(run_dir: Path) -> RunStatus:
    """The state of a run folder: its summary's status when it has one; PARTIAL when it has a
    checkpoint or a summary that does not read (training it again resumes it, or names the file);
    PENDING otherwise."""
    run_dir = Path(run_dir)
    if (run_dir / SUMMARY_FILE).exists():
        try:
            return read_summary(run_dir).status
        except RecordError:
            return RunStatus.PARTIAL
    return RunStatus.PARTIAL if (run_dir / CHECKPOINT_FILE).exists() else RunStatus.PENDING


# The files of a run folder: a folder holding any of them is a run folder, listed even when one is missing.
RUN_FILES = (SPEC_FILE, METRICS_FILE, SUMMARY_FILE, PLAN_FILE, CHECKPOINT_FILE)


def run_dirs(store: Path) -> list[Path]:
    """The run folders of a store, sorted: its subfolders holding any run file (`RUN_FILES`), moved-aside
    attempts left out. A folder without spec.json is listed too, so its reader can say it leaves it out.

    FileNotFoundError when ``store`` is not a folder.
    """
    store = Path(store)
    if not store.is_dir():
        raise FileNotFoundError(f"run store {store}: no such folder")
    return sorted(d for d in store.iterdir() if d.is_dir() and DIVERGED_ASIDE not in d.name
                  and any((d / f).exists() for f in RUN_FILES))


@contextlib.contextmanager
def locked(run_dir: Path, *, wait: bool = False) -> Iterator[bool]:
    """Hold the run folder's lock (``.lock``, the trainer's): yields True once held, or False at once when
    another process holds it and ``wait`` is False. The OS drops it on exit or kill."""
    with open(Path(run_dir) / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def temp_files(run_dir: Path) -> list[Path]:
    """The temporary files of cut writes in a run folder (see `remove_temp_files`), without touching them."""
    run_dir = Path(run_dir)
    names = tuple(Path(f).name + "." for f in (*RUN_FILES, TIMING_FILE))  # mkstemp's prefix: "<file>."
    return [f for where in (run_dir, (run_dir / CHECKPOINT_FILE).parent)
            for f in (where.iterdir() if where.is_dir() else ())
            if f.name.endswith(TMP_SUFFIX) and f.name.startswith(names) and f.is_file()]


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files that writes cut by a kill left in a run folder (``<file>.<random>.tmp``
    beside spec.json, summary.json, ... and the checkpoint; scalefit.atomic); returns them.

    Call it only while holding the run's lock (`locked`, or the trainer's): a live writer's file is not garbage.
    """
    gone = temp_files(run_dir)
    for f in gone:
        f.unlink(missing_ok=True)
    return gone


def move_aside(run_dir: Path) -> Path:
    """Rename a diverged run folder to ``<run_id>.diverged-<n>`` (the first free n), so it is trained
    again from scratch while the failed attempt is kept; returns the new path."""
    run_dir = Path(run_dir)
    k = 1
    while (aside := run_dir.with_name(f"{run_dir.name}{DIVERGED_ASIDE}{k}")).exists():
        k += 1
    return run_dir.rename(aside)


def copy_final_state(parent: Path, child: Path) -> None:
    """Start ``child`` where ``parent`` ended: copy its metrics log, then its checkpoint.

    Metrics first, checkpoint last (atomically): a kill in between leaves no checkpoint in ``child``,
    so the next attempt copies again instead of training the child from scratch.
    """
    parent, child = Path(parent), Path(child)
    (child / CHECKPOINT_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(parent / METRICS_FILE, child / METRICS_FILE)
    atomic_write_bytes(child / CHECKPOINT_FILE, (parent / CHECKPOINT_FILE).read_bytes())

