"""The public API at the top of the package: every name resolves, and importing it stays light."""

import subprocess
import sys

import pytest

import scalefit as sf


def test_every_public_name_resolves():
    for name in sf.__all__:
        assert getattr(sf, name) is not None, name
    assert set(sf.__all__) <= set(dir(sf))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sf.nope  # noqa: B018


def test_import_is_lazy():
    # `scalefit --help` and `import scalefit` must not pay for JAX, pandas or matplotlib.
    code = "import sys, scalefit; print(' '.join(m for m in ('jax', 'pandas', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_fit_and_forecast_through_the_api():
    table = sf.load_table("cerebras")
    result = sf.fit(table, "kaplan_c")
    assert isinstance(result, sf.FitResult) and result.status == sf.FitStatus.CONVERGED
    assert isinstance(sf.forecast(result, C=1e23), sf.Forecast)
    assert sf.get_law("chinchilla") is sf.LAWS["chinchilla"] and sf.NKind.parse("total") == "total"
