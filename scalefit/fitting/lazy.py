"""JAX, imported on first use: a fit whose law has a closed form (`scalefit.fitting.varpro`) never needs it.

Importing JAX costs a fresh process more than the whole fit of such a law; every module of the fitter that
uses JAX takes `jax` and `jnp` from here, and the first attribute read imports the real module.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """A module imported at the first attribute read (then every read goes to it)."""

    def __init__(self, name: str):
        self._name = name  # the module's import name, e.g. "jax.numpy"
        self._module = None  # the module once imported

    def __getattr__(self, attr):
        if attr.startswith("__"):  # copy / pickle probes: a plain object's answer, no import
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")


class LazyJit:
    """`jax.jit(fun, **options)`, made at the first call (so defining a jitted function imports nothing)."""

    def __init__(self, fun, **options):
        self._fun = fun  # the Python function to compile
        self._options = options  # jax.jit's keyword arguments (static_argnames ...)
        self._jitted = None  # the jitted function once made
        self.__doc__ = fun.__doc__

    def jitted(self):
        """The jitted function itself (its `_cache_size()` counts compilations)."""
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, **self._options)
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self.jitted()(*args, **kwargs)

    def _cache_size(self) -> int:
        return self.jitted()._cache_size()


def lazy_jit(**options):
    """Decorator: `jax.jit` with `options`, applied at the first call (`LazyJit`)."""
    return lambda fun: LazyJit(fun, **options)
