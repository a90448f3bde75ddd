"""Shared test setup: JAX's persistent compilation cache so repeated runs skip XLA compiles."""

import os
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
