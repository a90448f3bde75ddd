"""load_table: column discovery, derivations, conventions, every bad-input case, fingerprints."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting import datasets
from scalefit.fitting.table import FitTable, load_table


def _runs(n=6):
    """Synthetic runs from a known Chinchilla law (Hoffmann 2022 unrounded constants), exactly 6ND."""
    N = np.geomspace(1e7, 1e9, n)
    D = 20.0 * N * np.linspace(0.5, 2.0, n)
    loss = 1.6934 + 406.40 / N**0.33917 + 410.72 / D**0.28491
    return pd.DataFrame({"N": N, "D": D, "loss": loss})


def test_dataframe_defaults_compute_c_as_6nd():
    df = _runs()
    t = load_table(df)
    assert isinstance(t, FitTable) and t.source == "DataFrame" and len(t) == 6
    assert list(t.frame.columns) == ["N", "D", "C", "loss", "run", "weight", "row"]
    np.testing.assert_array_equal(t.frame["C"], 6.0 * df["N"] * df["D"])
    np.testing.assert_array_equal(t.frame["loss"], df["loss"])
    assert t.c_kind == "6ND" and t.n_kind == "total"
    assert any("C computed as 6ND" in n for n in t.notes)
    assert list(t.frame["run"]) == [str(i) for i in range(6)] and list(t.frame["row"]) == list(range(6))
    assert (t.frame["weight"] == 1.0).all()
    assert t.excluded == ()


def test_d_derived_from_c_recovers_d():
    df = _runs()
    src = pd.DataFrame({"params": df["N"], "flops": 6.0 * df["N"] * df["D"], "Loss": df["loss"]})
    t = load_table(src)
    np.testing.assert_allclose(t.frame["D"], df["D"], rtol=1e-14)
    assert any("D derived from C = 6ND" in n and "'flops'" in n for n in t.notes)
    assert any("N <- 'params'" in n and "loss <- 'Loss'" in n for n in t.notes)
    assert t.c_kind == "6ND" and any("c_kind taken as 6ND" in n for n in t.notes)
    r = load_table(src, c_kind="reported")
    assert r.c_kind == "reported" and any("derived D is approximate" in n for n in r.notes)


def test_explicit_columns_run_and_weight():
    df = _runs().rename(columns={"N": "size", "D": "toks", "loss": "xent"})
    df["name"] = [f"m{i}" for i in range(6)]
    df["w"] = [1.0, 2.0, 0.5, 1.0, 1.0, 0.0]
    t = load_table(df, n_col="size", d_col="toks", loss_col="xent", run_col="name", weight_col="w")
    assert list(t.frame["run"]) == list(df["name"]) and list(t.frame["weight"]) == list(df["w"])
    np.testing.assert_array_equal(t.frame["N"], df["size"])


def test_unspecified_c_kind_when_c_is_not_6nd():
    df = _runs()
    df["C"] = 7.0 * df["N"] * df["D"]
    t = load_table(df)
    assert t.c_kind == "unspecified" and any("not 6ND" in n for n in t.notes)
    assert load_table(df, c_kind="exact").c_kind == "exact"


def test_declared_6nd_that_is_not_is_an_error_naming_rows():
    df = _runs()
    df["C"] = 6.0 * df["N"] * df["D"]
    df.loc[[2, 4], "C"] *= 1.5
    with pytest.raises(ValueError, match=r"2 rows of the DataFrame: row 2 \(C/6ND = 1.5\), row 4"):
        load_table(df, c_kind="6ND")


def test_c_kind_other_than_6nd_without_c_column():
    with pytest.raises(ValueError, match="c_kind='exact' but the DataFrame has no C column"):
        load_table(_runs(), c_kind="exact")


def test_invalid_kinds():
    with pytest.raises(ValueError, match="n_kind must be one of"):
        load_table(_runs(), n_kind="embedding")
    with pytest.raises(ValueError, match="c_kind must be one of"):
        load_table(_runs(), c_kind="flops")


def test_bad_rows_are_excluded_with_row_and_reason():
    df = _runs(12)
    df["N"] = df["N"].astype(object)
    df["w"] = 1.0
    df.loc[0, "loss"] = np.nan
    df.loc[1, "loss"] = np.inf
    df.loc[2, "loss"] = 0.0
    df.loc[3, "loss"] = -2.0
    df.loc[4, "N"] = np.nan
    df.loc[5, "N"] = -1e8
    df.loc[6, "D"] = 0.0
    df.loc[7, "N"] = "abc"
    df.loc[8, "w"] = np.nan
    df.loc[9, "w"] = -1.0
    df.loc[10, "D"] = -np.inf
    df.loc[10, "loss"] = np.nan
    df.index = [f"r{i}" for i in range(12)]
    t = load_table(df, weight_col="w")
    assert dict(t.excluded) == {
        "r0": "loss is NaN, expected finite and > 0",
        "r1": "loss is infinite, expected finite and > 0",
        "r2": "loss is 0, expected finite and > 0",
        "r3": "loss is -2, expected finite and > 0",
        "r4": "N is NaN, expected finite and > 0",
        "r5": "N is -1e+08, expected finite and > 0",
        "r6": "D is 0, expected finite and > 0",
        "r7": "N ('N') is not a number: 'abc'",
        "r8": "weight is NaN, expected finite and >= 0",
        "r9": "weight is -1, expected finite and >= 0",
        "r10": "loss is NaN, expected finite and > 0; D is infinite, expected finite and > 0",
    }
    assert [r for r, _ in t.excluded] == [f"r{i}" for i in range(11)]  # in source order
    assert list(t.frame["row"]) == ["r11"] and len(t) == 1


def test_derived_c_does_not_repeat_the_input_reason():
    df = _runs()
    df.loc[1, "N"] = np.nan
    t = load_table(df)
    assert t.excluded == ((1, "N is NaN, expected finite and > 0"),)


def test_bad_c_when_d_is_derived():
    src = pd.DataFrame({"N": [1e8, 2e8, 3e8], "C": [1e18, np.nan, -1.0], "loss": [3.0, 2.9, 2.8]})
    t = load_table(src)
    assert dict(t.excluded) == {1: "C is NaN, expected finite and > 0", 2: "C is -1, expected finite and > 0"}


def test_all_rows_bad_is_an_error():
    df = _runs(3)
    df["loss"] = np.nan
    with pytest.raises(ValueError, match="no usable rows in the DataFrame: all 3 excluded, e.g. row 0: loss is NaN"):
        load_table(df)


def test_csv_rows_and_reasons_name_the_file(tmp_path):
    df = _runs()
    df.loc[3, "loss"] = np.nan
    p = tmp_path / "runs.csv"
    df.to_csv(p, index=False)
    t = load_table(p)
    assert t.source == str(p)
    assert t.excluded == ((3, f"loss is NaN, expected finite and > 0 (file {p})"),)
    assert load_table(str(p)).fingerprint == t.fingerprint


def test_missing_loss_column_names_field_tried_available_and_file(tmp_path):
    p = tmp_path / "runs.csv"
    _runs().rename(columns={"loss": "ppl"}).to_csv(p, index=False)
    with pytest.raises(ValueError) as e:
        load_table(p)
    msg = str(e.value)
    assert "no loss column" in msg and str(p) in msg and "'final_loss'" in msg and "['N', 'D', 'ppl']" in msg


def test_missing_n_and_missing_d_and_c():
    with pytest.raises(ValueError, match=r"no N column in the DataFrame: tried 'N', 'n', 'params'"):
        load_table(pd.DataFrame({"D": [1e9], "loss": [3.0]}))
    with pytest.raises(ValueError, match=r"no D column .* and no C column to derive it from"):
        load_table(pd.DataFrame({"N": [1e8], "loss": [3.0]}))


def test_explicit_column_not_found(tmp_path):
    p = tmp_path / "runs.parquet"
    _runs().to_parquet(p)
    with pytest.raises(ValueError, match=rf"N: column 'size' not found in file {p}; columns available: \['N', 'D', 'loss'\]"):
        load_table(p, n_col="size")
    with pytest.raises(ValueError, match="keep column 'seed' not found"):
        load_table(p, keep=["seed"])


def test_parquet_equals_dataframe(tmp_path):
    df = _runs()
    p = tmp_path / "runs.parquet"
    df.to_parquet(p)
    assert load_table(p).fingerprint == load_table(df).fingerprint


def test_unreadable_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"cannot read {tmp_path / 'nope.csv'}: no such file"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="not a dataset name; known datasets: chinchilla"):
        load_table("chinchila")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=f"cannot read {bad} as parquet"):
        load_table(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"cannot read {empty} as csv"):
        load_table(empty)
    txt = tmp_path / "runs.txt"
    txt.write_text("N,D,loss\n1,2,3\n")
    with pytest.raises(ValueError, match=r"expected .csv, .jsonl or .parquet, got '.txt'"):
        load_table(txt)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_table(tmp_path)  # a folder
    with pytest.raises(TypeError, match="got list"):
        load_table([1, 2])


def test_dataset_chinchilla():
    t = load_table("chinchilla")
    assert t.source == "chinchilla" and len(t) == 240 and t.excluded == ()
    assert t.c_kind == "6ND" and t.n_kind == "total"
    assert any("5 rows dropped upstream" in n and "[0, 1, 2, 3, 4]" in n for n in t.notes)
    assert set(t.frame["row"]) == set(range(5, 245))


def test_dataset_datablations_excludes_nan_losses_and_carries_u():
    t = load_table("datablations")
    assert len(t) == 308 and len(t.excluded) == 9
    assert [r for r, _ in t.excluded] == [293, 294, 301, 305, 306, 307, 308, 309, 312]
    assert all(why == "loss is NaN, expected finite and > 0" for _, why in t.excluded)
    assert "U" in t.frame.columns and (t.frame["U"] <= t.frame["D"]).all()
    pub = datasets.load("datablations")
    pub = pub[pub["in_published_fit"]]
    assert len(load_table(pub)) == 182


def test_dataset_cerebras_keeps_reported_c():
    t = load_table("cerebras")
    assert t.c_kind == "reported" and list(t.frame["run"])[0] == "Cerebras-GPT-111M"
    np.testing.assert_array_equal(t.frame["C"], datasets.load("cerebras")["C"])


def test_dataset_conventions_are_enforced():
    with pytest.raises(ValueError, match="mixes N conventions"):
        load_table("porian_isoflop")
    with pytest.raises(ValueError, match="counts N as 'total', but n_kind='non-embedding'"):
        load_table("chinchilla", n_kind="non-embedding")
    with pytest.raises(ValueError, match="mixes N conventions"):
        load_table("porian_optimal")
    opt = datasets.load("porian_optimal")
    with pytest.raises(ValueError, match=r"no N column in the DataFrame: .*'n_star'"):
        load_table(opt[opt["param_count"] == "kaplan"], n_kind="non-embedding")
    iso = datasets.load("porian_isoflop")
    one = iso[iso["cfg_id"] == "rw|base|long|kaplan|kaplan|train"]
    t = load_table(one, n_kind="non-embedding")
    assert len(t) == len(one) and t.c_kind == "6ND" and t.n_kind == "non-embedding"


def test_fingerprint_tracks_used_values_only():
    df = _runs()
    base = load_table(df).fingerprint
    assert load_table(df.copy()).fingerprint == base
    changed = df.copy()
    changed.loc[2, "loss"] += 1e-12
    assert load_table(changed).fingerprint != base
    assert load_table(df.assign(w=2.0), weight_col="w").fingerprint != base
    assert load_table(df.assign(run=list("abcdef"))).fingerprint != base
    # An excluded row does not change what is fitted, so it does not change the fingerprint.
    extra = pd.concat([df, pd.DataFrame({"N": [1e8], "D": [1e9], "loss": [np.nan]}, index=[6])])
    t = load_table(extra)
    assert t.fingerprint == base and t.excluded == ((6, "loss is NaN, expected finite and > 0"),)


def test_fittable_is_frozen_and_hashable():
    t = load_table(_runs())
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.n_kind = "active"
    assert t == load_table(_runs()) and hash(t) == hash(load_table(_runs()))
    assert t != load_table(_runs(), n_kind="active")
    assert "6 rows used, 0 excluded" in t.report() and t.summary()["rows"] == 6


def test_duplicate_index_falls_back_to_positions():
    df = pd.concat([_runs(3), _runs(3)])
    df.iloc[4, df.columns.get_loc("loss")] = np.nan
    t = load_table(df)
    assert t.excluded == ((4, "loss is NaN, expected finite and > 0"),)
    assert any("duplicate labels" in n for n in t.notes)


def test_keep_and_bad_u():
    df = _runs()
    df["U"] = df["D"] / 4
    df.loc[5, "U"] = 0.0
    df["tag"] = list("xyzxyz")
    t = load_table(df, keep=["tag"])
    assert t.excluded == ((5, "U is 0, expected finite and > 0"),)
    assert list(t.frame["tag"]) == list("xyzxy")
    assert t.fingerprint != load_table(df.drop(columns="tag")).fingerprint


def test_several_parameter_counts_and_moe_columns():
    """A row carries active and total N and E: N is one kind, the others named columns the laws read."""
    df = _runs()
    df["experts"] = [1, 2, 4, 8, 16, 32]
    df["N_all"] = df["N"] * df["experts"]
    t = load_table(df, n_kind="active", columns={"E": "experts", "N_total": "N_all"})
    assert list(t.frame["E"]) == [1, 2, 4, 8, 16, 32] and np.all(t.frame["N_total"] >= t.frame["N"])
    assert "E carried from column 'experts'" in t.notes and t.n_kind == "active"
    assert t.fingerprint != load_table(df, n_kind="active", columns={"E": "experts"}).fingerprint
    # A column named exactly E (or U, G) is carried as it is; a bad value excludes the row with its reason.
    df2 = df.rename(columns={"experts": "E"})
    df2.loc[3, "E"] = np.nan
    t2 = load_table(df2, n_kind="active")
    assert t2.excluded == ((3, "E is NaN, expected finite and > 0"),) and "E" in t2.frame
    with pytest.raises(ValueError, match=r"columns: E <- column 'nope' not found"):
        load_table(df, columns={"E": "nope"})
    with pytest.raises(ValueError, match="one of the table's own fields"):
        load_table(df, columns={"N": "N_all"})


def test_compressed_csv_of_clark_routing_with_column_options():
    """Clark et al.'s file as published (datasets/routing_clark2022/curves.csv.gz), read with column options:
    N active, a second count, E, and every evaluation of every run."""
    from scalefit.fitting.datasets import data_dir

    path = data_dir() / "routing_clark2022" / "curves.csv.gz"
    t = load_table(path, n_col="dense_parameter_count", d_col="step", loss_col="loss_validation",
                   run_col="hyper_id", n_kind="active", c_kind="6ND",
                   columns={"E": "num_experts", "N_total": "total_parameter_count"}, keep=["router_type"],
                   checkpoints="all")
    assert len(t) + len(t.excluded) == 5799 and t.frame["run"].nunique() == 223
    # Each run's evaluation at step 0 (D = 0), and a few evaluations without a loss, are excluded, each
    # with its reason and the file.
    why = [w for _, w in t.excluded]
    assert sum(w.startswith("D is 0") for w in why) == 223 and all("curves.csv.gz" in w for w in why)
    assert all(w.startswith(("D is 0", "loss is NaN")) for w in why)
    assert set(t.frame["E"].unique()) >= {1.0, 64.0, 512.0}
    assert np.all(t.frame["N_total"] >= t.frame["N"] - 1) and "D derived" not in " ".join(t.notes)
