"""Reference datasets: files unchanged, row counts, normalised columns, provenance, the Epoch exclusion."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalefit import cli

from scalefit.fitting import datasets

ROWS = {
    "chinchilla": 240,
    "datablations": 317,
    "porian_isoflop": 1745,
    "porian_optimal": 177,
    "porian_fits": 30,
    "cerebras": 7,
    "clark_routing": 223,
    "clark_routing_curves": 5799,
    "multipower": 6265,
}
PROVENANCE = ("title", "rows", "source", "license", "n_convention", "c_convention", "loss", "notes")


def test_datasets_come_from_the_repository_not_the_shared_folder():
    repo = Path(__file__).resolve().parents[2]
    assert datasets.data_dir().resolve() == repo / "datasets"  # through the package's resources
    for name in datasets.names():
        assert datasets.path(name).resolve().is_relative_to(repo / "datasets")


def test_names():
    assert datasets.names() == list(ROWS)


@pytest.mark.parametrize("name", list(ROWS))
def test_files_are_the_source_files_unchanged(name):
    assert datasets.sha256_of(name) == datasets.recorded_sha256(name)


@pytest.mark.parametrize("name", list(ROWS))
def test_row_counts_and_provenance(name):
    df = datasets.load(name)
    info = datasets.info(name)
    assert len(df) == ROWS[name] == info["rows"]
    for key in PROVENANCE:
        assert key in info and info[key] not in ("", None), key
    assert info["loss"].startswith("nats/token, ")
    assert df.attrs == info
    assert df.index.name == "csv_row" and df.index.is_unique


@pytest.mark.parametrize("name", ["chinchilla", "datablations", "porian_isoflop", "cerebras"])
def test_normalised_columns(name):
    df = datasets.load(name)
    for col in ("N", "D", "C", "loss"):
        assert df[col].dtype == np.float64, col
        assert (df[col].dropna() > 0).all(), col
    assert pd.api.types.is_string_dtype(df["run"])
    assert df["run"].is_unique  # one row per run


def test_chinchilla_drops_the_five_highest_losses():
    raw = pd.read_csv(datasets.path("chinchilla"))
    assert len(raw) == 245
    df = datasets.load("chinchilla")
    full = datasets.load("chinchilla", include_dropped=True)
    assert len(full) == 245 and full["epoch_excluded"].dtype == bool
    assert full["epoch_excluded"].sum() == 5 and "epoch_excluded" not in df.columns
    dropped = full.index[full["epoch_excluded"]]
    # They are exactly the 5 highest losses of the file, and everything else is kept.
    assert sorted(dropped) == sorted(raw["loss"].nlargest(5).index) == [0, 1, 2, 3, 4]
    assert full.loc[dropped, "loss"].min() > df["loss"].max()
    assert sorted(df.index) == sorted(set(range(245)) - set(dropped))
    assert df.attrs["rows_dropped"] == 5 and df.attrs["dropped_rows"] == [0, 1, 2, 3, 4]
    assert "highest-loss" in df.attrs["dropped_reason"]
    assert full.attrs["rows_dropped"] == 0 and full.attrs["rows"] == 245
    # Values are the file's, renamed.
    assert np.array_equal(full["N"].to_numpy(), raw["Model Size"].to_numpy())
    assert np.array_equal(full["C"].to_numpy(), raw["Training FLOP"].to_numpy())


def test_chinchilla_d_is_c_over_6n():
    df = datasets.load("chinchilla")
    np.testing.assert_allclose(6.0 * df["N"] * df["D"], df["C"], rtol=1e-12)
    assert "6 N" in df.attrs["d_convention"]
    assert df.attrs["n_convention"] == "total"


def test_datablations_keeps_nan_losses_and_published_flag():
    df = datasets.load("datablations")
    assert df["loss"].isna().sum() == 9 == df.attrs["rows_loss_nan"]
    assert df["in_published_fit"].dtype == bool and df["in_published_fit"].sum() == 182
    assert df.loc[df["in_published_fit"], "loss"].notna().all()
    np.testing.assert_allclose(df["C"], 6.0 * df["N"] * df["D"], rtol=1e-12)
    np.testing.assert_allclose(df["epochs"], df["D"] / df["U"], rtol=1e-9)
    assert df["U"].dtype == np.float64 and (df["U"] <= df["D"]).all()
    assert "NaN" in df.attrs["notes"]


def test_porian_isoflop_conventions():
    df = datasets.load("porian_isoflop")
    assert df.attrs["n_convention"].startswith("mixed: see param_count")
    assert df.attrs["rows_by_param_count"] == {"standard": 940, "attention": 481, "kaplan": 324}
    assert df.attrs["configurations"] == 15
    np.testing.assert_allclose(df["C"], 6.0 * df["N"] * df["D"], rtol=1e-12)
    assert set(df["dataset"]) == {"rw", "owt2"}


def test_porian_tables_as_published():
    opt = datasets.load("porian_optimal")
    assert opt["n_star"].isna().sum() == 4 and opt["cfg_id"].nunique() == 15
    fits = datasets.load("porian_fits")
    basic = fits[fits["kind"] == "basic"].set_index("cfg_id")["n_exponent"]
    # The first entry of the RefinedWeb progression quoted in the paper: a = 0.834 (Kaplan setup).
    assert basic["rw|base|long|kaplan|kaplan|train"] == pytest.approx(0.834, abs=5e-4)
    assert basic["rw|tuned|short|const|standard|val"] == pytest.approx(0.497, abs=5e-4)


def test_cerebras_reported_flops_are_not_6nd():
    df = datasets.load("cerebras")
    assert list(df["run"]) == [f"Cerebras-GPT-{s}" for s in ("111M", "256M", "590M", "1.3B", "2.7B", "6.7B", "13B")]
    assert df.attrs["c_convention"].startswith("reported")
    ratio = df["C"] / (6.0 * df["N"] * df["D"])
    assert (ratio > 1.1).all()
    assert df["loss"].is_monotonic_decreasing


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*chinchilla.*cerebras"):
        datasets.load("nope")
    with pytest.raises(ValueError, match="known datasets"):
        datasets.info("nope")


def test_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "chinchilla_epoch")):
        datasets.load("chinchilla")


def test_loaded_frames_are_independent_copies():
    a = datasets.load("cerebras")
    a.loc[a.index[0], "loss"] = -1.0
    assert datasets.load("cerebras")["loss"].iloc[0] == 2.566


def test_cli_list(capsys):
    assert cli.main(["datasets", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(ROWS)
    for line, (name, rows) in zip(out, ROWS.items()):
        assert line.split()[:3] == [name, str(rows), "rows"]


def test_cli_show(capsys):
    assert cli.main(["datasets", "show", "chinchilla", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "rows: 240" in out and "n_convention: total" in out and "dropped_rows: [0, 1, 2, 3, 4]" in out
    assert "row005" in out and "row008" not in out  # first 3 kept rows, the dropped ones are gone


def test_cli_show_unknown(capsys):
    assert cli.main(["datasets", "show", "nope"]) == 2
    assert "known datasets" in capsys.readouterr().err


def test_clark_routing_final_evaluations():
    df = datasets.load("clark_routing")
    assert (df["step"] >= 248_000).all() and df["run"].is_unique  # the last evaluation, near 250,000 steps
    assert df.attrs["runs_by_router"]["Dense"] >= 10 and set(df["router_type"]) == {"Dense", "Hash", "S-Base", "RL-R"}
    assert (df.loc[df["router_type"] == "Dense", "E"] == 1).all()
