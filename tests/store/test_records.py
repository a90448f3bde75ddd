"""The run-folder records read the files the trainer and the sweep write, and write them back unchanged."""

import json
from pathlib import Path

import pytest

from scalefit.store.records import (FINISHED, METRIC_FIELDS, MetricRecord, PlanRecord, Role, RunStatus, RunSummary,
                                    SpecRecord, SweepIndex, TimingRecord, finite_or_none)

STORE = Path(__file__).resolve().parents[1] / "data" / "run_store"
DENSE, MOE, DIVERGED = STORE / "d16-l1-fc2c9d05ebe9", STORE / "d16-l1-dda87f79fdbc", STORE / "diverged"
RECORDS = {"spec.json": SpecRecord, "summary.json": RunSummary, "plan.json": PlanRecord, "timing.json": TimingRecord}


@pytest.mark.parametrize("run", [DENSE, MOE, DIVERGED], ids=["dense", "moe", "diverged"])
def test_json_files_round_trip_key_for_key(run):
    for name, cls in RECORDS.items():
        if not (run / name).exists():
            continue
        text = (run / name).read_text()
        rec = cls.from_dict(json.loads(text))
        assert json.dumps(rec.to_dict(), indent=2) + "\n" == text, name  # same keys, order and values


@pytest.mark.parametrize("run", [DENSE, MOE, DIVERGED], ids=["dense", "moe", "diverged"])
def test_metrics_lines_round_trip(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    recs = [MetricRecord.from_dict(json.loads(line)) for line in lines]
    assert [json.dumps(r.to_dict()) for r in recs] == lines
    assert all((r.moe is not None) == (run == MOE) for r in recs)


def test_typed_fields():
    spec = SpecRecord.from_dict(json.loads((MOE / "spec.json").read_text()))
    assert spec.params.active < spec.params.non_embedding and spec.model["n_expert"] == 2
    summary = RunSummary.from_dict(json.loads((MOE / "summary.json").read_text()))
    assert spec.corpus.fingerprint == summary.corpus_fingerprint and summary.params == spec.params
    last = MetricRecord.from_dict(json.loads((MOE / "metrics.jsonl").read_text().splitlines()[-1]))
    assert len(last.moe.expert_load) == 1 and sum(last.moe.expert_load[0]) == pytest.approx(1, abs=1e-5)
    div = RunSummary.from_dict(json.loads((DIVERGED / "summary.json").read_text()))
    assert div.status is RunStatus.DIVERGED and div.status in FINISHED and div.diverged_at_step == 4
    assert div.final_train_loss is None and div.status == "diverged"  # a StrEnum compares to the spelling
    plan = PlanRecord.from_dict(json.loads((DENSE / "plan.json").read_text()))
    assert plan.role is Role.RUN and plan.parent is None and plan.budget is None
    t = TimingRecord.from_dict(json.loads((DENSE / "timing.json").read_text()))
    assert t.overhead_frac == json.loads((DENSE / "timing.json").read_text())["overhead_frac"]
    assert "overhead" in t.line() and t.other >= 0
    index = SweepIndex.from_dict(json.loads((STORE / "sweep-fx.json").read_text()))
    assert set(index.runs) == {DENSE.name, MOE.name}


def test_older_files_read():
    # spec.json before python_version was recorded, and a train config of the "6N" spelling: the
    # store keeps configs as written (the trainer compares them with its own).
    d = json.loads((DENSE / "spec.json").read_text())
    del d["python_version"]
    d["train"]["flops_convention"] = "6N"
    spec = SpecRecord.from_dict(d)
    assert spec.python_version is None and spec.train["flops_convention"] == "6N"
    assert spec.to_dict() == d and "python_version" not in spec.to_dict()
    # A line of another tool: only the step is required.
    r = MetricRecord.from_dict({"step": 3})
    assert r.step == 3 and r.tokens is None and r.moe is None
    assert list(r.to_dict()) == list(METRIC_FIELDS)


def test_bad_records_are_refused():
    for bad in ([1, 2], {"tokens": 4}, {"step": "3"}, {"step": True}):
        with pytest.raises(ValueError):
            MetricRecord.from_dict(bad)
    s = json.loads((DENSE / "summary.json").read_text())
    with pytest.raises(ValueError):
        RunSummary.from_dict({**s, "status": "exploded"})
    with pytest.raises(KeyError, match="wall_time"):
        RunSummary.from_dict({k: v for k, v in s.items() if k != "wall_time"})
    with pytest.raises(KeyError, match="fingerprint"):
        SpecRecord.from_dict({**json.loads((DENSE / "spec.json").read_text()), "corpus": {"source": "x"}})


def test_finite_or_none():
    assert finite_or_none(1.5) == 1.5 and finite_or_none(float("nan")) is None
    assert finite_or_none(float("inf")) is None and finite_or_none(-float("inf")) is None
