"""The one table reader: N per kind of count, the unused-column warning, JSONL and W&B exports, and the
same column options everywhere, on the quickstart's real runs (tests/data/quickstart)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting.columns import parse_n_cols
from scalefit.fitting.table import load_table

RUNS = Path(__file__).resolve().parents[1] / "data" / "quickstart" / "runs.csv"
OPTS = dict(c_col="C_exact", loss_col="final_eval_loss", run_col="run_id", c_kind="exact")


def test_n_kind_picks_the_column_named_for_it_and_warns_of_the_other():
    df = pd.read_csv(RUNS)
    total = load_table(RUNS, **OPTS)
    np.testing.assert_array_equal(total.frame["N"], df["N_total"])
    assert any("N <- 'N_total': its name says total N" in n for n in total.notes)
    (w,) = total.warnings
    assert "'N_non_embedding' looks like non-embedding parameters and is unused" in w and "--n-kind non-embedding" in w
    # The friction: --n-kind non-embedding used to relabel total N. Now it fits the non-embedding column.
    ne = load_table(RUNS, n_kind="non-embedding", **OPTS)
    np.testing.assert_array_equal(ne.frame["N"], df["N_non_embedding"])
    assert ne.n_kind == "non-embedding" and "'N_total' looks like total parameters" in ne.warnings[0]


def test_a_generic_n_column_is_taken_as_the_kind_asked_and_still_warns():
    df = pd.read_csv(RUNS).rename(columns={"N_total": "N"})
    t = load_table(df, **OPTS)
    np.testing.assert_array_equal(t.frame["N"], df["N"])
    assert len(t.warnings) == 1 and "'N_non_embedding'" in t.warnings[0]
    # Asking for non-embedding N: the column named for it wins over the generic N.
    ne = load_table(df, n_kind="non-embedding", **OPTS)
    np.testing.assert_array_equal(ne.frame["N"], df["N_non_embedding"])


def test_columns_named_per_kind_silence_the_warning_and_choose_by_n_kind():
    df = pd.read_csv(RUNS).rename(columns={"N_total": "params", "N_non_embedding": "N_ne"})
    cols = parse_n_cols(["total=params", "non-embedding=N_ne"])
    assert cols == {"total": "params", "non-embedding": "N_ne"}
    t = load_table(df, n_col=cols, n_kind="non-embedding", **OPTS)
    np.testing.assert_array_equal(t.frame["N"], df["N_ne"]) and not t.warnings
    assert not load_table(df, n_col=cols, **OPTS).warnings
    with pytest.raises(ValueError, match="n_kind='active' but the N columns named are for total, non-embedding"):
        load_table(df, n_col=cols, n_kind="active", **OPTS)
    with pytest.raises(ValueError, match=r"N \(non-embedding\): column 'nope' not found"):
        load_table(df, n_col={"non-embedding": "nope"}, n_kind="non-embedding", **OPTS)


def test_parse_n_cols():
    assert parse_n_cols([]) is None and parse_n_cols(["N_ne"]) == "N_ne"
    assert parse_n_cols(["a=b"]) == "a=b"  # not a kind of N on the left: a column name
    with pytest.raises(ValueError, match="mixes a plain column"):
        parse_n_cols(["N", "total=N_total"])
    with pytest.raises(ValueError, match="names two columns for total N"):
        parse_n_cols(["total=a", "total=b"])


def test_no_column_for_the_kind_asked_names_what_the_table_has():
    df = pd.read_csv(RUNS).drop(columns=["N_total"])
    with pytest.raises(ValueError, match=r"no N column in the DataFrame: .*column 'N_non_embedding' counts "
                                         r"non-embedding N \(--n-kind non-embedding\)"):
        load_table(df, **OPTS)


def test_a_run_store_export_declares_its_convention_so_no_warning(tmp_path):
    df = pd.read_csv(RUNS)
    df["N"] = df["N_total"]
    df.attrs["n_convention"] = "total"  # what scalefit.store.tables.load names
    assert not load_table(df, **OPTS).warnings


def test_jsonl_reads_as_the_csv_does(tmp_path):
    df = pd.read_csv(RUNS)
    p = tmp_path / "runs.jsonl"
    df.to_json(p, orient="records", lines=True, double_precision=15)
    a, b = load_table(RUNS, **OPTS), load_table(p, **OPTS)
    assert list(a.frame["run"]) == list(b.frame["run"]) and a.warnings == b.warnings
    for c in ("N", "D", "C", "loss"):
        np.testing.assert_allclose(a.frame[c], b.frame[c], rtol=1e-14)


def _wandb_export(df: pd.DataFrame) -> pd.DataFrame:
    """The quickstart runs laid out as W&B's "export runs to CSV" lays out a project: Name, State,
    Runtime, then config and summary columns (two runs marked crashed, as an interrupted sweep shows)."""
    out = pd.DataFrame({"Name": df["run_id"], "State": "finished", "Notes": "-", "Runtime": 300,
                        "n_params": df["N_total"], "tokens": df["D"], "flops": df["C_exact"], "lr": df["lr"],
                        "val/loss": df["final_eval_loss"], "_step": df["steps"]})
    out.loc[[3, 7], "State"] = "crashed"
    return out


def test_wandb_export_is_recognised_and_unfinished_runs_excluded(tmp_path):
    p = tmp_path / "wandb_export.csv"
    _wandb_export(pd.read_csv(RUNS)).to_csv(p, index=False)
    t = load_table(p, c_kind="exact")
    assert len(t) == 14 and [r for r, _ in t.excluded] == [3, 7]
    assert all("W&B state 'crashed', not finished" in why for _, why in t.excluded)
    assert t.excluded_counts() == {"W&B state 'crashed', not finished": 2}
    assert set(t.frame["run"]) <= set(pd.read_csv(RUNS)["run_id"])
    assert any("W&B runs export" in n for n in t.notes) and any("loss <- 'val/loss'" in n for n in t.notes)


def test_wandb_names_that_repeat_are_refused_not_merged(tmp_path):
    # W&B display names need not be unique: two runs named alike would be one bootstrap unit.
    export = _wandb_export(pd.read_csv(RUNS))
    export.loc[5, "Name"] = export.loc[4, "Name"]
    with pytest.raises(ValueError, match=r"run id '.*' names rows 4, 5 of the DataFrame, but each row of this "
                                         r"table is a run of its own.*export the run ID too"):
        load_table(export, c_kind="exact")
