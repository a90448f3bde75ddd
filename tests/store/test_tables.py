"""The run store as tables: schema, curves, export, damaged records, and ingest of outside logs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalefit import cli

from scalefit.training import corpus as data

from scalefit.store import tables as runs
from scalefit.sweep.run import run_sweep
from scalefit.fitting.table import load_table

FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "heapq.py", "bisect.py",
         "fnmatch.py", "glob.py", "shlex.py", "difflib.py"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real run store: a 2-run grid sweep of the tiniest shape."""
    tmp = tmp_path_factory.mktemp("store")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name in FILES:
        shutil.copy(data.stdlib_root() / name, corpus / name.replace("/", "_"))
    f = tmp / "g.toml"
    f.write_text(f'[sweep]\nname = "g"\ndesign = "grid"\ncorpus = "{corpus}"\n[model]\nseq_len = 32\n'
                 '[train]\nbatch_size = 8\nn_evals = 3\neval_batches = 2\nlog_every = 5\ncheckpoint_every = 50\n'
                 '[grid]\nsizes = ["d32-l1"]\ntokens = [12800, 25600]\n')
    run_sweep(f, tmp / "runs", progress=False, log=lambda s: None)
    return tmp / "runs"


def _copy(store, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(store, out)
    return out


def test_run_table_schema_and_conventions(store):
    df = runs.load(store)
    assert list(df.columns) == list(runs.RUN_TABLE) and len(df) == 2
    assert (df.status == "completed").all() and (df.sweep == "g").all() and (df.design == "grid").all()
    r = df.sort_values("D").iloc[0]
    assert r.D == 12800 and r.steps == 50 and r.N_total > r.N_non_embedding == r.N_active
    spec = json.loads((store / r.run_id / "spec.json").read_text())
    assert r.C_6N == pytest.approx(spec["flops_per_token"]["six_n"] * 12800)
    assert r.C_exact == pytest.approx(spec["flops_per_token"]["exact"] * 12800)
    assert (df.N == df.N_total).all() and (df.C == df.C_exact).all() and (df.loss == df.final_eval_loss).all()
    assert df.attrs["skipped"] == [] and df.attrs["c_convention"] == "exact"
    ft = load_table(df)  # the fitter reads the run table as it is
    assert len(ft) == 2 and ft.c_kind == "exact" and set(ft.frame.run) == set(df.run_id)
    active = runs.load(store, n_kind="active", c_kind="6ND", loss="train")
    assert (active.N == active.N_active).all() and (active.loss == active.final_train_loss).all()
    # 6ND follows the N chosen: with total N the table is 6 N_total D, and the fitter takes it as 6ND.
    total = runs.load(store, n_kind="total", c_kind="6ND")
    assert (total.C == 6 * total.N_total * total.D).all() and (total.C > total.C_6N).all()
    assert load_table(total).c_kind == "6ND"
    with pytest.raises(ValueError, match="n_kind"):
        runs.load(store, n_kind="embedding")


def test_curves_have_every_logged_step(store):
    cv = runs.load_curves(store)
    df = runs.load(store)
    for rid, g in cv.groupby("run_id"):
        assert g.step.is_monotonic_increasing and g.step.iloc[-1] == df.set_index("run_id").loc[rid, "steps"]
        assert g.eval_loss.notna().sum() >= 2 and (g.tokens == g.step * 256).all()


def test_export_csv_and_parquet_round_trip(store, tmp_path):
    df = runs.load(store)
    pq = runs.export(store, tmp_path / "t.parquet")
    back = pd.read_parquet(pq)
    assert list(back.columns) == list(runs.RUN_TABLE)
    np.testing.assert_array_equal(back.final_eval_loss, df.final_eval_loss)
    assert cli.main(["runs", "export", str(store), str(tmp_path / "t.csv"), "--c-kind", "6ND"]) == 0
    csv = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(csv.C, 6 * df.N_total * df.D)  # 6ND in the exported N (total)
    with pytest.raises(ValueError, match="expected a .csv or .parquet"):
        runs.export(store, tmp_path / "t.xlsx")


def test_damaged_records_are_reported_and_skipped(store, tmp_path, capsys):
    out = _copy(store, tmp_path)
    a, b = sorted(p.name for p in out.iterdir() if p.is_dir())
    m = out / a / "metrics.jsonl"
    lines = m.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # a line cut in the middle of the file
    m.write_text("\n".join(lines) + "\n")
    (out / b / "spec.json").write_text('{"model": {"d_model": 3')
    df = runs.load(out)
    assert list(df.run_id) == [a]  # b is left out, a keeps its row
    skipped = dict(df.attrs["skipped"])
    assert f"{m}:3" in skipped and "not a valid metrics record" in skipped[f"{m}:3"]
    assert str(out / b / "spec.json") in skipped and "not valid JSON" in skipped[str(out / b / "spec.json")]
    assert len(runs.load_curves(out)) == len(lines) - 1
    assert cli.main(["runs", "ls", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"skipped {out / b / 'spec.json'}" in text and "1 runs: 1 completed" in text


def test_partial_run_and_cut_last_line(store, tmp_path):
    out = _copy(store, tmp_path)
    rid = sorted(p.name for p in out.iterdir() if p.is_dir())[1]
    (out / rid / "summary.json").unlink()
    m = out / rid / "metrics.jsonl"
    m.write_bytes(m.read_bytes()[:-7])  # killed mid-write
    row = runs.load(out).set_index("run_id").loc[rid]
    assert row.status == "partial" and row.steps > 0 and np.isfinite(row.final_train_loss)
    assert any("cut mid-write" in why for _, why in runs.load(out).attrs["skipped"])


def test_ingest_wandb_export_and_jsonl(tmp_path):
    wb = pd.DataFrame({"Name": ["a", "b", "c"], "State": ["finished", "crashed", "finished"],
                       "Runtime": [10, 20, 30], "params": [1e6, 2e6, 4e6], "tokens": [2e7, 4e7, 8e7],
                       "val/loss": [3.1, 2.9, 2.7]})
    wb.to_csv(tmp_path / "wandb.csv", index=False)
    df = runs.ingest(tmp_path / "wandb.csv", {"N_total": "params", "D": "tokens", "final_eval_loss": "val/loss"},
                     wandb=True)
    assert list(df.columns) == list(runs.RUN_TABLE)
    assert list(df.status) == ["completed", "crashed", "completed"] and list(df.wall_time) == [10, 20, 30]
    np.testing.assert_allclose(df.C, 6 * wb.params * wb.tokens)
    assert df.attrs["notes"] == ["C_6N computed as 6 * N_total * D"]
    ft = load_table(df)
    assert list(ft.frame.run) == ["a", "b", "c"] and ft.c_kind == "6ND"
    wb.to_json(tmp_path / "w.jsonl", orient="records", lines=True)
    again = runs.ingest(tmp_path / "w.jsonl", {"run_id": "Name", "N_total": "params", "D": "tokens",
                                                "final_eval_loss": "val/loss"})
    np.testing.assert_array_equal(again.loss, df.loss)
    with pytest.raises(ValueError, match="D: column 'toks' not found"):
        runs.ingest(tmp_path / "wandb.csv", {"N_total": "params", "D": "toks", "final_eval_loss": "val/loss"})
    with pytest.raises(ValueError, match="not a run-table column"):
        runs.ingest(wb, {"params": "params"})
    with pytest.raises(ValueError, match="final_eval_loss"):
        runs.ingest(wb, {"N_total": "params", "D": "tokens"})
    with pytest.raises(ValueError, match="cannot read"):
        (tmp_path / "bad.parquet").write_text("not parquet")
        runs.ingest(tmp_path / "bad.parquet", {})


def test_fixture_store_of_an_earlier_trainer_loads():
    # Files written by the trainer and sweep of commit 264cf7f (tests/data/run_store/README.md).
    df = runs.load(Path(__file__).resolve().parents[1] / "data" / "run_store").set_index("run_id")
    assert runs.SCHEMA is runs.RUN_TABLE and df.attrs["skipped"] == []
    assert dict(df.status) == {"d16-l1-dda87f79fdbc": "completed", "d16-l1-fc2c9d05ebe9": "completed",
                               "diverged": "diverged"}
    moe, div = df.loc["d16-l1-dda87f79fdbc"], df.loc["diverged"]
    assert moe.design == "moe" and moe.label == "d16-l1/moe2-top1" and moe.n_expert == 2
    assert moe.N_active < moe.N_non_embedding and moe.D == 1280 and moe.steps == 10
    assert div.sweep == "" and div.role == "run" and div.steps == 4 and np.isnan(div.final_train_loss)
    cv = runs.load_curves(Path(__file__).resolve().parents[1] / "data" / "run_store")
    assert len(cv) == 6 + 6 + 3 and list(cv.columns)[:3] == ["run_id", "step", "tokens"]


def test_damaged_plan_keeps_the_run(store, tmp_path):
    out = _copy(store, tmp_path)
    rid = sorted(p.name for p in out.iterdir() if p.is_dir())[0]
    (out / rid / "plan.json").write_text("{")
    df = runs.load(out).set_index("run_id")
    assert len(df) == 2 and df.loc[rid, "sweep"] == "" and df.loc[rid, "status"] == "completed"
    assert dict(df.attrs["skipped"])[str(out / rid / "plan.json")].endswith("sweep columns left empty")


def test_missing_store_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        runs.load(tmp_path / "nope")
    assert not list(Path(tmp_path).iterdir())
