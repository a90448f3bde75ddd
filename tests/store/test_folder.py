"""Run-folder I/O: records written atomically, the metrics log cut back and read with damage reported,
and the one run_status."""

import shutil
from pathlib import Path

import pytest

from scalefit.store import folder
from scalefit.store.records import CHECKPOINT_FILE, METRICS_FILE, RunStatus

STORE = Path(__file__).resolve().parents[1] / "data" / "run_store"
DENSE, MOE, DIVERGED = STORE / "d16-l1-fc2c9d05ebe9", STORE / "d16-l1-dda87f79fdbc", STORE / "diverged"


def test_records_are_written_as_they_were_read(tmp_path):
    for read, write, name in [(folder.read_spec, folder.write_spec, "spec.json"),
                              (folder.read_summary, folder.write_summary, "summary.json"),
                              (folder.read_plan, folder.write_plan, "plan.json"),
                              (folder.read_timing, folder.write_timing, "timing.json")]:
        write(tmp_path, read(MOE))
        assert (tmp_path / name).read_bytes() == (MOE / name).read_bytes(), name
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_records_name_the_file(tmp_path):
    (tmp_path / "spec.json").write_text('{"model": {"d_model": 3')
    with pytest.raises(folder.RecordError, match="spec.json: not valid JSON") as e:
        folder.read_spec(tmp_path)
    assert e.value.path == tmp_path / "spec.json" and e.value.reason.startswith("not valid JSON")
    (tmp_path / "summary.json").write_text('{"status": "completed"}')
    with pytest.raises(folder.RecordError, match="summary.json: not a RunSummary: no diverged_at_step"):
        folder.read_summary(tmp_path)
    with pytest.raises(FileNotFoundError):
        folder.read_plan(tmp_path)


def _log(tmp_path, text: bytes) -> Path:
    p = tmp_path / METRICS_FILE
    p.write_bytes(text)
    return p


def test_metrics_damage_is_reported_and_a_cut_last_line_dropped(tmp_path):
    lines = (DENSE / METRICS_FILE).read_bytes().splitlines(keepends=True)
    p = _log(tmp_path, b"".join(lines[:2]) + b"not json\n" + b'{"tokens": 1}\n' + lines[2] + lines[3][:20])
    scan = folder.scan_metrics(p)
    assert [r.step for r in scan.records] == [1, 2, 4]
    assert [(b.number, b.cut, b.json_error) for b in scan.bad] == [(3, False, True), (4, False, False), (6, True, True)]
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 3 is not valid JSON"):
        folder.read_metrics(p)
    _log(tmp_path, b"".join(lines[:2]) + b'{"tokens": 1}\n')
    with pytest.raises(ValueError, match=r"line 3 is not a valid metrics record"):
        folder.read_metrics(p)
    _log(tmp_path, b"".join(lines[:3]) + lines[3][:20])  # killed mid-write
    assert [r.step for r in folder.read_metrics(p)] == [1, 2, 4]
    assert folder.read_metrics(tmp_path / "absent.jsonl") == [] and folder.scan_metrics(tmp_path / "x").records == ()


def test_truncate_keeps_the_lines_byte_for_byte(tmp_path):
    raw = (MOE / METRICS_FILE).read_bytes()
    p = _log(tmp_path, raw + b'{"step": 12, "tok')
    kept = folder.truncate_metrics(p, 6)
    assert [r.step for r in kept] == [1, 2, 4, 6]
    assert p.read_bytes() == b"".join(raw.splitlines(keepends=True)[:4])


def test_metrics_log_appends_whole_lines(tmp_path):
    recs = folder.read_metrics(MOE / METRICS_FILE)
    with folder.MetricsLog(tmp_path) as log:
        for r in recs:
            log.append(r)
    assert (tmp_path / METRICS_FILE).read_bytes() == (MOE / METRICS_FILE).read_bytes()


def test_run_status(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    assert folder.run_status(run) is RunStatus.PENDING
    (run / CHECKPOINT_FILE).parent.mkdir()
    (run / CHECKPOINT_FILE).write_bytes(b"")
    assert folder.run_status(run) is RunStatus.PARTIAL
    (run / "summary.json").write_text('{"status": "compl')  # does not read: training it names the file
    assert folder.run_status(run) is RunStatus.PARTIAL
    assert folder.run_status(DENSE) is RunStatus.COMPLETED and folder.run_status(DIVERGED) is RunStatus.DIVERGED
    assert folder.run_status(tmp_path / "absent") is RunStatus.PENDING


def test_run_dirs_and_moving_aside(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(STORE, store)
    (store / "no-spec").mkdir()
    assert [d.name for d in folder.run_dirs(store)] == sorted([DENSE.name, MOE.name, DIVERGED.name])
    first = folder.move_aside(store / DIVERGED.name)
    (store / DIVERGED.name).mkdir()
    (store / DIVERGED.name / "spec.json").write_text("{}")
    second = folder.move_aside(store / DIVERGED.name)
    assert (first.name, second.name) == ("diverged.diverged-1", "diverged.diverged-2")
    assert [d.name for d in folder.run_dirs(store)] == sorted([DENSE.name, MOE.name])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        folder.run_dirs(tmp_path / "nope")


def test_copy_final_state(tmp_path):
    parent, child = tmp_path / "parent", tmp_path / "child"
    shutil.copytree(DENSE, parent)
    (parent / CHECKPOINT_FILE).parent.mkdir()
    (parent / CHECKPOINT_FILE).write_bytes(b"state")
    folder.copy_final_state(parent, child)
    assert (child / METRICS_FILE).read_bytes() == (parent / METRICS_FILE).read_bytes()
    assert (child / CHECKPOINT_FILE).read_bytes() == b"state"
