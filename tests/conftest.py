"""Shared test setup: JAX's persistent compilation cache so repeated runs skip XLA compiles."""

import os
from pathlib import Path

import jax

_CACHE = Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", os.environ.get("SCALEFIT_JAX_CACHE", str(_CACHE)))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
