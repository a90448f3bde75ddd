"""Reference datasets: real, published language-model runs shipped in the repository's `datasets/`.

Each dataset is one or more CSV files copied unchanged from its source (provenance, licence and the
published numbers are in datasets/README.md). `load(name)` reads them and normalises the column
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
    return list(_SPECS)


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
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_SPECS)}") from None


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

_HOFFMANN = "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models (arXiv:2203.15556)"
_CLARK = ("Clark et al. 2022, Unified Scaling Laws for Routed Language Models (ICML, arXiv:2202.01169); "
          "google-deepmind/scaling_laws_for_routing @ 42da0c3, data/curves.csv.gz")
_CLARK_COLS = ("hyper_id = run; step (an evaluation every 10,000 to 250,000); router_type Dense / Hash / S-Base / "
               "RL-R; num_experts E (1..512); k experts per token; routing_frequency (share of routed blocks); "
               "dense_parameter_count (what one token sees, the paper's N); total_parameter_count (all experts, "
               "the paper's P); flops_per_step; model_size_label 15M..1.3B; d_model, num_blocks, num_heads, "
               "kqv_size, flop_increase, seed; losses loss_validation (the paper's), loss_c4, loss_pile, "
               "loss_lambada, loss_wikitext103, loss_curation_corpus")
_PORIAN = (
    "Porian et al. 2024, Resolving Discrepancies in Compute-Optimal Scaling of Language Models "
    "(arXiv:2406.19146); formll/resolving-scaling-law-discrepancies @ 0dc60d91b8a525858a3067fc9e4a46ff5374cc6f"
)
_PORIAN_N = (
    "mixed: see param_count column (kaplan = non-embedding; standard = including the output embedding "
    "/ last layer; attention = FLOP-equivalent count including attention FLOPs)"
)
_PORIAN_LOSS = "nats/token, RefinedWeb (dataset rw) or OpenWebText2 (owt2), the paper's tokenizer"
_PORIAN_CFG = (
    "cfg_id = dataset|hparams|warmup|decay|param_count|loss_split; hparams base/tuned, warmup long/short, "
    "decay kaplan/chinchilla/const (LR schedule), loss_split train/val; source_file = authors' summary table"
)

_SPECS: dict[str, _Spec] = {
    "chinchilla": _Spec(
        title="Chinchilla Approach 3 points (Hoffmann 2022 Fig. 4, extracted by Epoch AI)",
        files=("chinchilla_epoch/svg_extracted_data.csv",),
        sha256=("193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30",),
        source=(
            f"{_HOFFMANN}, Figure 4, points decoded from the SVG by Besiroglu, Erdil, Barnett, You 2024, "
            "Chinchilla Scaling: A replication attempt (arXiv:2404.10102); epoch-research/analyzing-chinchilla "
            "@ 92258837425e1b5f2851d624287f0120583a3d0e, data/svg_extracted_data.csv"
        ),
        license=("no licence file in the source repository; values are measurements read off a published figure "
                 "(cite both papers)"),
        n_convention="total",
        d_convention="derived: D = C / (6 N) (not in the file)",
        c_convention="6ND (C = Training FLOP as read off the figure; D is derived assuming C = 6ND)",
        loss="nats/token, MassiveText, Chinchilla's SentencePiece tokenizer",
        columns=(
            "N = Model Size (total parameters, embeddings included); C = Training FLOP; D = C/(6N); loss; "
            "run = row<csv_row>; x, y, color, hex_color = SVG extraction artefacts"
        ),
        notes="245 extracted points; Epoch AI's fit uses 240 (5 highest-loss rows dropped, see dropped_*).",
        published=(
            "Hoffmann unrounded: E=1.6934 A=406.40 B=410.72 alpha=0.33917 beta=0.28491; Epoch: E=1.817 "
            "A=482.0 B=2085.4 alpha=0.3478 beta=0.3658 (datasets/README.md)"
        ),
    ),
    "datablations": _Spec(
        title="Data-constrained C4 runs (Muennighoff et al. 2023)",
        files=("datablations/datablations_c4_runs.csv",),
        sha256=("df7dd970d17515ccebb83b4291baaf6df6a609f511101eae107b588cd9ebeb91",),
        source=(
            "Muennighoff et al. 2023, Scaling Data-Constrained Language Models (arXiv:2305.16264); "
            "huggingface/datablations @ 13701315b163f1c54642b94ad237b2699187c3ee, final losses from "
            "utils/parametric_fit.ipynb"
        ),
        license="Apache-2.0",
        n_convention="total (as listed in the paper's run table)",
        d_convention="tokens seen in training, repeats included",
        c_convention="6ND (C_6ND column, exactly 6*N*D)",
        loss="nats/token, C4 validation, GPT-2 BPE tokenizer",
        columns=(
            "run = run name; N; D = tokens seen; U = unique tokens; epochs = D/U; C = C_6ND; loss; seed; "
            "source_cell = notebook cell; in_published_fit = one of the 182 runs behind the published fit; "
            "dedup_variant"
        ),
        notes=(
            "All 317 rows are kept. 9 unfinished runs have loss = NaN and stay in the table: a fitter "
            "reports them as excluded. Filter on in_published_fit to reproduce the published fit (182 runs)."
        ),
        published=(
            "E=1.869 A=520.8 B=1487.7 alpha=beta=0.3526596 R_D*=15.387756 R_N*=5.309743; "
            "sum-Huber 0.0158259 on the 182 runs (datasets/README.md)"
        ),
    ),
    "porian_isoflop": _Spec(
        title="IsoFLOP runs of Porian et al. 2024 (15 configurations)",
        files=("porian2024/isoflop_points.csv",),
        sha256=("dea6471ba7c599ab8a06c73e3cd58a90cf6bcaecd93c3cd9f6d23d9c55c7431a",),
        source=_PORIAN,
        license="MIT",
        n_convention=_PORIAN_N,
        d_convention="tokens seen (column t); C = 6 N D with that row's N",
        c_convention="6ND (flops = 6 n t to rounding, in the row's param_count convention)",
        loss=_PORIAN_LOSS,
        columns=f"N = n; D = t; C = flops (budget 1.25e16 .. 2.56e19, doubling); loss; run = cfg_id|C|N; {_PORIAN_CFG}",
        notes=(
            "Compare or pool rows only within one cfg_id: param_count changes what N means, loss_split "
            "changes what loss means, and the two datasets have different losses."
        ),
        published=(
            "a (N* ~ C^a) RefinedWeb 0.834 -> 0.701 -> 0.604 -> 0.571 -> 0.497; OpenWebText2 0.870 -> "
            "0.700 -> 0.602 -> 0.569 -> 0.518 (datasets/README.md)"
        ),
    ),
    "porian_optimal": _Spec(
        title="Porian et al. 2024 compute-optimal (n*, t*, loss*) per budget",
        files=("porian2024/optimal_pairs.csv",),
        sha256=("ccc571ee717c915911cc0e5b0c2790314e654dbf0b83b81df1a816a6eacffa13",),
        source=_PORIAN,
        license="MIT",
        n_convention=_PORIAN_N,
        d_convention="t_star = compute-optimal tokens at that budget",
        c_convention="6ND (flops = budget)",
        loss=_PORIAN_LOSS,
        columns=(
            "flops = budget; n_star, t_star, loss_star = the authors' interpolated optimum; multiplier_star "
            f"= t*/n*; n_star_std, loss_star_std = bootstrap std; {_PORIAN_CFG}"
        ),
        notes="Columns kept as published. 4 rows have no optimum (NaN n_star ... loss_star_std).",
        published="see porian_fits and datasets/README.md",
    ),
    "porian_fits": _Spec(
        title="Porian et al. 2024 power-law fits per configuration",
        files=("porian2024/reference_fits.csv",),
        sha256=("8ed20b912239f17f801858d0a0ab7a3d877770d44e56c62170d4a8ae6c2bb7a3",),
        source=_PORIAN,
        license="MIT",
        n_convention=_PORIAN_N,
        d_convention="t* (compute-optimal tokens)",
        c_convention="6ND",
        loss=_PORIAN_LOSS,
        columns=(
            "kind = basic / weighted fit; n_exponent, n_coef, n_r2: n* = n_coef C^n_exponent; likewise t_* "
            f"for t* and multiplier_* for t*/n*; A, E, alpha: the authors' loss-vs-compute fit; {_PORIAN_CFG}"
        ),
        notes="Columns kept as published; 2 rows (basic, weighted) per configuration.",
        published="n_exponent of the basic fits is the published a (datasets/README.md)",
    ),
    "cerebras": _Spec(
        title="Cerebras-GPT 111M-13B, 20 tokens/param (Dey et al. 2023)",
        files=("cerebras_gpt/cerebras_gpt_final.csv",),
        sha256=("06e33feda27f5f38798fb3b7d995297319947ced38577087e7b00e671a65d2e6",),
        source="Dey et al. 2023, Cerebras-GPT (arXiv:2304.03208); model card values",
        license="Apache-2.0",
        n_convention="total (nominal model size, N_nominal)",
        d_convention="tokens seen (D_tokens, about 20 N)",
        c_convention="reported (Cerebras' own FLOP count, flops_reported; not 6ND, see c_over_6nd)",
        loss="nats/token, Pile test set, GPT-2 BPE tokenizer",
        columns=(
            "run = model; N = N_nominal; D = D_tokens; C = flops_reported; loss = pile_test_xent; "
            "pile_test_xent_earlier_card_or_paper_v1 = the loss in an earlier card / paper v1; layers, "
            "d_model, seq_len, batch_size_seq, steps, tokens_per_param"
        ),
        notes="Natural holdout: fit 111M-2.7B, predict 6.7B and 13B.",
        published="model-card losses 2.566 (111M) .. 1.575 (13B)",
    ),
    "clark_routing": _Spec(
        title="Dense and routed (MoE) runs, final evaluation (Clark et al. 2022)",
        files=("routing_clark2022/curves.csv.gz",),
        sha256=("c03e7531add85e594f368d33bac4a0220280be858a7ed12d147cf73af6a3819f",),
        source=_CLARK,
        license="data CC-BY 4.0, code Apache-2.0 (cite the paper)",
        n_convention="active (dense_parameter_count: the parameters one token sees; total_parameter_count "
                     "counts every expert)",
        d_convention="not given: every run trains the same 250,000 steps",
        c_convention="reported (flops_per_step x step, the authors' count)",
        loss="nats/token, the paper's validation set (loss_validation; loss_c4, loss_pile ... kept)",
        columns=f"N = dense_parameter_count; E = num_experts; C = flops_per_step x step; loss = loss_validation; "
                f"run = hyper<hyper_id>; the last evaluation of each run; {_CLARK_COLS}",
        notes="223 runs, the last of each run's 25-26 evaluations. Natural split: fit up to 370M, forecast 1.3B.",
        published="law forms of Clark et al. (log L in log N and a saturating log E); see datasets/README.md",
    ),
    "clark_routing_curves": _Spec(
        title="Dense and routed (MoE) runs, every evaluation (Clark et al. 2022)",
        files=("routing_clark2022/curves.csv.gz",),
        sha256=("c03e7531add85e594f368d33bac4a0220280be858a7ed12d147cf73af6a3819f",),
        source=_CLARK,
        license="data CC-BY 4.0, code Apache-2.0 (cite the paper)",
        n_convention="active (dense_parameter_count; total_parameter_count counts every expert)",
        d_convention="not given (steps)",
        c_convention="reported (flops_per_step per step)",
        loss="nats/token, loss_validation and the other evaluation sets",
        columns=f"as published: {_CLARK_COLS}",
        notes="Columns kept as published; one row per (run, evaluation step).",
        published="see clark_routing",
    ),
    "multipower": _Spec(
        title="Loss curves under nine learning-rate schedules, 25M/100M/400M (Luo et al. 2025)",
        files=("multipower/curves.csv",),
        sha256=("f522ad67b19cda26086f304abaf20f9d7da65aadef725cc2cc2a68c172cf6a61",),
        source=("Luo et al. 2025, A Multi-Power Law for Loss Curve Prediction Across Learning Rate Schedules "
                "(arXiv:2503.12811); thu-yao-01-luo/MultiPowerLaw @ 8da9f19, loss_curve_repo/csv_{25,100,400}/*.csv "
                "flattened to one file"),
        license="MIT",
        n_convention="model size label only (25M, 100M, 400M)",
        d_convention="steps (tokens per step not given)",
        c_convention="unspecified",
        loss="nats/token, training loss",
        columns=("model (25M, 100M, 400M); schedule (constant_T, cosine_T, wsd_20000_24000, wsdld_20000_24000, "
                 "wsdcon_X); step (every 128 from 2,176); lr (the schedule's rate at that step); loss"),
        notes=("Every schedule warms up linearly 0 -> 3e-4 over 2,160 steps. Curve laws need the rate at every "
               "step: rebuild it from the schedule definitions (datasets/README.md)."),
        published=("multi-power law, per size 25M / 100M / 400M: mean relative error on the six test curves "
                   "0.110% / 0.142% / 0.168%, worst 0.409% / 0.583% / 0.995% (datasets/README.md)"),
    ),
}


def sha256_of(name: str) -> dict[str, str]:
    """Current sha256 of each file behind `name` (compare with the recorded ones to detect edits)."""
    return {f: hashlib.sha256((data_dir() / f).read_bytes()).hexdigest() for f in _spec(name).files}


def recorded_sha256(name: str) -> dict[str, str]:
    """sha256 of each file behind `name` as copied from its source."""
    spec = _spec(name)
    return dict(zip(spec.files, spec.sha256))


__all__ = ["names", "info", "load", "path", "data_dir", "sha256_of", "recorded_sha256", "ENV_VAR"]
