"""Shared test setup: JAX's persistent compilation cache so repeated runs skip XLA compiles."""

import os
import signal
from pathlib import Path

import jax
import pytest

_CACHE = Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", os.environ.get("SCALEFIT_JAX_CACHE", str(_CACHE)))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _is_blank(png_path) -> bool:
    """True when every pixel of the PNG has the same colour (nothing was drawn)."""
    import numpy as np
    from matplotlib.image import imread

    img = np.asarray(imread(str(png_path)), float)
    return bool(img.size == 0 or np.var(img.reshape(-1, img.shape[-1]), axis=0).max() == 0)


@pytest.fixture
def is_blank():
    """The check that a saved figure drew something."""
    return _is_blank


@pytest.fixture
def default_sigint():
    """Children started during the test get SIGINT's default disposition, as under a terminal's Ctrl-C.

    A shell that starts a job in the background sets SIGINT to ignored, exec'd children inherit that,
    and a Python started so installs no KeyboardInterrupt handler. A handled signal is reset to the
    default on exec, so the test process handles it (Python's own handler) while the test runs."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---- tables built from shipped data (datasets/, tests/data), for the reader, groups, targets, CLI ----

QUICKSTART = Path(__file__).resolve().parent / "data" / "quickstart"


def _three_recipes():
    """Porian et al. 2024's RefinedWeb runs (standard N, validation loss, short warmup) under three
    learning-rate recipes per (C, N) cell: base hyperparameters with the Kaplan (long cosine) or the
    Chinchilla (budget-matched cosine) decay, and a tuned learning rate held constant. 88 of the 133 cells
    have all three; column `recipe` says which."""
    from scalefit.fitting import datasets

    df = datasets.load("porian_isoflop")
    df = df[(df.dataset == "rw") & (df.param_count == "standard") & (df.loss_split == "val") & (df.warmup == "short")]
    return df.assign(recipe=df.hparams + "|" + df.decay).drop(columns="run").reset_index(drop=True)


def _quickstart_curves():
    """The quickstart's 16 real training curves (6 evaluations each: run_id, step, tokens, flops_exact,
    eval_loss) with each run's N_total, N_non_embedding and budget from its run table."""
    import pandas as pd

    runs = pd.read_csv(QUICKSTART / "runs.csv")
    return pd.read_csv(QUICKSTART / "curves.csv").merge(
        runs[["run_id", "N_total", "N_non_embedding", "budget"]], on="run_id")


@pytest.fixture(scope="session")
def three_recipes():
    """A table with three learning-rate recipes per cell (`_three_recipes`); copy it before changing it."""
    return _three_recipes()


@pytest.fixture(scope="session")
def quickstart_curves():
    """A real curve table (`_quickstart_curves`); copy it before changing it."""
    return _quickstart_curves()
