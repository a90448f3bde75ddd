"""Reference datasets: real, published language-model runs shipped in the repository's `datasets/`.

Each dataset is one or more CSV files copied unchanged from its source; its provenance, licence and the
published numbers it must reproduce are data, in datasets/provenance.toml (and, in prose,
datasets/README.md). `load(name)` reads them and normalises the column
names where they apply:

    N     parameters (which ones: `info(name)["n_convention"]`)
    D     training tokens seen
    C     training FLOPs (how counted: `info(name)["c_convention"]`)
    loss  cross-entropy in nats per token, natural log, in that family's own tokenizer
    run   a run identifier (one row per run)
    U     unique tokens (datablations only)

Every other original column is kept, the index is the 0-based data row of the source CSV
(`csv_row`), and `df.attrs` holds the same provenance as `info(name)`. Losses of different families
are never comparable: corpus and tokenizer differ (docs/conventions.md).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from scalefit import resources

ENV_VAR = "SCALEFIT_DATASETS"

# Epoch AI's replication drops the highest-loss points of the extracted Chinchilla data.
CHINCHILLA_DROPPED = 5


@dataclass(frozen=True)
class _Spec:
    title: str  # one line, shown by `scalefit datasets list`
    files: tuple[str, ...]  # CSV paths relative to datasets/; load() reads the first
    sha256: tuple[str, ...]  # of each file, as copied from the source (tests check them)
    source: str  # paper(s) and repository @ commit the numbers come from
    license: str  # the source's licence, as stated there
    n_convention: str  # which parameters N counts
    d_convention: str  # what D is and where it comes from
    c_convention: str  # how C was counted
    loss: str  # "nats/token, <corpus/tokenizer>"
    columns: str  # what each column of the loaded table means
    notes: str  # selection rules, caveats
    published: str  # the headline numbers a fit on this data should reproduce


def data_dir() -> Path:
    """The folder holding the reference CSVs.

    `$SCALEFIT_DATASETS` if set, else the copy shipped with the package (`scalefit.resources`: the
    repository's datasets/ folder in a checkout, its copy in a wheel).
    """
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(str(resources.files().joinpath("datasets")))


def path(name: str) -> Path:
    """Path of the (first) CSV file behind dataset `name`; FileNotFoundError if it is not there."""
    p = data_dir() / _spec(name).files[0]
    if not p.is_file():
        raise FileNotFoundError(
            f"reference dataset {name!r} not found at {p}: scalefit ships its datasets with the package "
            f"(scalefit/resources/datasets); reinstall it, or point ${ENV_VAR} at a copy of that folder"
        )
    return p


def names() -> list[str]:
    """Names of the reference datasets, in the order `scalefit datasets list` shows them."""
    return list(_specs())


def info(name: str) -> dict:
    """Provenance and conventions of dataset `name`, including `rows` (the rows `load(name)` returns)."""
    return dict(load(name).attrs)


def load(name: str, *, include_dropped: bool = False) -> pd.DataFrame:
    """Load dataset `name` as a DataFrame with normalised columns and provenance in `df.attrs`.

    include_dropped: for "chinchilla", return all 245 extracted points with a boolean column
    `epoch_excluded` marking the 5 that Epoch AI's analysis leaves out, instead of the 240 it fits.
    Datasets that drop nothing ignore it.
    """
    spec = _spec(name)
    df, extra = _BUILDERS[name](_read(path(name)), include_dropped)
    df.index.name = "csv_row"
    attrs = {
        "name": name,
        "title": spec.title,
        "rows": len(df),
        "source": spec.source,
        "license": spec.license,
        "files": ", ".join(f"datasets/{f}" for f in spec.files),
        "n_convention": spec.n_convention,
        "d_convention": spec.d_convention,
        "c_convention": spec.c_convention,
        "loss": spec.loss,
        "columns": spec.columns,
        "notes": spec.notes,
        "published": spec.published,
    }
    attrs.update(extra)
    df.attrs = attrs
    return df


def _spec(name: str) -> _Spec:
    try:
        return _specs()[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_specs())}") from None


@functools.lru_cache(maxsize=None)
def _read_cached(p: Path, mtime_ns: int) -> pd.DataFrame:
    return pd.read_csv(p)


def _read(p: Path) -> pd.DataFrame:
    # Cached because `scalefit datasets list` calls info() on every dataset; copied so callers may edit.
    return _read_cached(p, p.stat().st_mtime_ns).copy()


def _chinchilla(raw: pd.DataFrame, include_dropped: bool) -> tuple[pd.DataFrame, dict]:
    df = raw.rename(columns={"Model Size": "N", "Training FLOP": "C"})
    # The figure gives N and C; Hoffmann et al. count C = 6ND, so D is recovered from it.
    df["D"] = df["C"] / (6.0 * df["N"])
    df["run"] = [f"row{i:03d}" for i in df.index]
    top = df["loss"].nlargest(CHINCHILLA_DROPPED + 1)
    if top.iloc[-2] == top.iloc[-1]:  # a tie would make "the 5 highest" ambiguous
        raise ValueError("chinchilla: tie at the 5th-highest loss; the Epoch exclusion is ambiguous")
    dropped = sorted(int(i) for i in top.index[:CHINCHILLA_DROPPED])
    excluded = df.index.isin(dropped)
    extra = {
        "rows_in_file": len(df),
        "rows_dropped": 0 if include_dropped else len(dropped),
        "dropped_rows": dropped,
        "dropped_losses": [round(float(df.loc[i, "loss"]), 6) for i in dropped],
        "dropped_reason": (
            f"Epoch AI (Besiroglu et al. 2024) leave out the {CHINCHILLA_DROPPED} highest-loss points "
            f"(loss >= {top.iloc[-2]:.3f}; the next highest is {top.iloc[-1]:.3f}): all at C ~ 1e19 FLOP, "
            "the largest models of that budget (N >= 2e9) trained on fewer than 1e9 tokens. "
            + (
                "include_dropped=True: all rows kept, column epoch_excluded marks them."
                if include_dropped
                else "Pass include_dropped=True to get all 245 rows."
            )
        ),
    }
    if include_dropped:
        df["epoch_excluded"] = excluded
    else:
        df = df.loc[~excluded].copy()
    return df[["N", "D", "C", "loss", "run", *[c for c in df.columns if c not in "N D C loss run".split()]]], extra


def _datablations(raw: pd.DataFrame, include_dropped: bool) -> tuple[pd.DataFrame, dict]:
    df = raw.rename(columns={"C_6ND": "C"})
    n_nan = int(df["loss"].isna().sum())
    extra = {
        "rows_in_published_fit": int(df["in_published_fit"].sum()),
        "rows_loss_nan": n_nan,
        "rows_dropped": 0,
    }
    return _front(df, ["N", "D", "U", "C", "loss", "run"]), extra


def _porian_isoflop(raw: pd.DataFrame, include_dropped: bool) -> tuple[pd.DataFrame, dict]:
    df = raw.rename(columns={"n": "N", "t": "D", "flops": "C"})
    # One run per (configuration, budget, model size); cfg_id alone repeats across budgets.
    df["run"] = [f"{c}|C={f:.3g}|N={n:.0f}" for c, f, n in zip(df["cfg_id"], df["C"], df["N"])]
    counts = df["param_count"].value_counts()
    extra = {
        "rows_by_param_count": {k: int(v) for k, v in counts.items()},
        "configurations": int(df["cfg_id"].nunique()),
        "rows_dropped": 0,
    }
    return _front(df, ["N", "D", "C", "loss", "run"]), extra


def _as_is(raw: pd.DataFrame, include_dropped: bool) -> tuple[pd.DataFrame, dict]:
    return raw, {"rows_dropped": 0}


def _cerebras(raw: pd.DataFrame, include_dropped: bool) -> tuple[pd.DataFrame, dict]:
    df = raw.rename(
        columns={
            "N_nominal": "N",
            "D_tokens": "D",
            "flops_reported": "C",
            "pile_test_xent": "loss",
            "model": "run",
        }
    )
    ratio = df["C"] / (6.0 * df["N"] * df["D"])
    extra = {
        "c_over_6nd": f"{ratio.min():.2f} .. {ratio.max():.2f} (reported C is above 6ND, most at small N)",
        "rows_dropped": 0,
    }
    return _front(df, ["N", "D", "C", "loss", "run"]), extra


def _front(df: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    return df[first + [c for c in df.columns if c not in first]]


def _clark_final(raw: pd.DataFrame, include_dropped: bool) -> tuple[pd.DataFrame, dict]:
    # The laws of Clark et al. use each run's last evaluation; every run trains the same 250,000 steps.
    last = raw.loc[raw.groupby("hyper_id")["step"].idxmax()].sort_values("hyper_id")
    df = last.rename(columns={"dense_parameter_count": "N", "loss_validation": "loss", "num_experts": "E"})
    df["run"] = [f"hyper{h}" for h in df["hyper_id"]]
    df["C"] = df["flops_per_step"] * df["step"]
    extra = {"runs_by_router": {k: int(v) for k, v in df["router_type"].value_counts().items()},
             "rows_in_file": len(raw), "rows_dropped": 0}
    return _front(df, ["N", "E", "C", "loss", "run"]), extra


_BUILDERS: dict[str, Callable[[pd.DataFrame, bool], tuple[pd.DataFrame, dict]]] = {
    "chinchilla": _chinchilla,
    "datablations": _datablations,
    "porian_isoflop": _porian_isoflop,
    "porian_optimal": _as_is,
    "porian_fits": _as_is,
    "cerebras": _cerebras,
    "clark_routing": _clark_final,
    "clark_routing_curves": _as_is,
    "multipower": _as_is,
}

@functools.lru_cache(maxsize=1)
def _specs() -> dict[str, _Spec]:
    """Every dataset's provenance, read from datasets/provenance.toml (data, not code)."""
    import tomllib

    raw = tomllib.loads((data_dir() / "provenance.toml").read_text())
    specs = {name: _Spec(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()})
             for name, entry in raw.items()}
    missing = sorted(set(_BUILDERS) ^ set(specs))
    if missing:
        raise ValueError(f"{data_dir() / 'provenance.toml'} and the loaders disagree on datasets {missing}")
    return specs


def sha256_of(name: str) -> dict[str, str]:
    """Current sha256 of each file behind `name` (compare with the recorded ones to detect edits)."""
    return {f: hashlib.sha256((data_dir() / f).read_bytes()).hexdigest() for f in _spec(name).files}


def recorded_sha256(name: str) -> dict[str, str]:
    """sha256 of each file behind `name` as copied from its source."""
    spec = _spec(name)
    return dict(zip(spec.files, spec.sha256))


__all__ = ["names", "info", "load", "path", "data_dir", "sha256_of", "recorded_sha256", "ENV_VAR"]
