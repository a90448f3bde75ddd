"""Property tests of the table reader: whatever a file holds, `load_table` / `read_runs` return a table or
raise one clear error (ValueError or FileNotFoundError, whose one-line message names the file), never
another exception. Every row of a returned table is either fitted or listed as excluded."""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalefit.fitting.sources import read_runs
from scalefit.fitting.table import FitTable, load_table

CLEAR = (ValueError, FileNotFoundError)
NAMES = ["run", "N", "D", "C", "loss", "params", "tokens", "weight", "w", "x", " N ", "val loss", ""]
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**12, 10**12).map(str),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "n/a", "True", "1e6x", '"10,000"', "0", "-1", "1e400"]),
    st.text(alphabet=string.printable, max_size=8),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def csv_texts(draw):
    """CSV text: a header of usual and unusual names, rows of arbitrary cells, ragged or cut at times."""
    cols = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=6))
    n = draw(st.integers(0, 8))
    rows = [[draw(CELLS) for _ in cols] for _ in range(n)]
    if rows and draw(st.booleans()):
        rows[draw(st.integers(0, n - 1))].append("extra")
    sep = draw(st.sampled_from([",", ";", "\t"]))
    text = "\n".join(sep.join(r) for r in [cols, *rows])
    if draw(st.booleans()):
        text += "\n"
    if text and draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # cut anywhere, as a crash mid-write would
    return text


def _check(result_or_error, path):
    kind, value = result_or_error
    if kind == "error":
        msg = str(value)
        assert isinstance(value, CLEAR), f"{type(value).__name__}: {value}"
        assert msg and "\n" not in msg.strip(), msg
        return
    t = value
    assert isinstance(t, FitTable) and len(t) > 0
    assert np.all(np.isfinite(t.frame[["N", "D", "C", "loss"]].to_numpy(float)))
    assert np.all(t.frame[["N", "D", "C", "loss"]].to_numpy(float) > 0)


def _try(fn, *a, **k):
    try:
        return "table", fn(*a, **k)
    except CLEAR as e:
        return "error", e
    except Exception as e:  # anything else is the bug these properties look for
        return "error", e


@SETTINGS
@given(text=csv_texts())
def test_any_csv_gives_a_table_or_one_clear_error(tmp_path, text):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    _check(_try(load_table, path), path)


@SETTINGS
@given(data=st.binary(max_size=64), suffix=st.sampled_from([".csv", ".parquet", ".jsonl", ".txt", ""]))
def test_any_bytes_give_a_table_or_one_clear_error(tmp_path, data, suffix):
    path = tmp_path / f"runs{suffix}"
    path.write_bytes(data)
    _check(_try(read_runs, path), path)


@SETTINGS
@given(text=csv_texts(), weight=st.sampled_from([None, "w", "weight"]),
       unit=st.sampled_from(["nats", "bits"]), checkpoints=st.sampled_from(["final", "all", "after=0.5"]))
def test_any_csv_with_options_gives_a_table_or_one_clear_error(tmp_path, text, weight, unit, checkpoints):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    _check(_try(load_table, path, weight_col=weight, loss_unit=unit, checkpoints=checkpoints), path)


def test_rows_are_fitted_or_excluded_with_a_reason(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n1e8,2e9,3.1\n0,2e9,3.0\nx,1e9,3.2\n2e8,4e9,nan\n4e8,8e9,2.9\n")
    t = load_table(path)
    assert len(t) + len(t.excluded) == 5 and {r for r, _ in t.excluded} == {1, 2, 3}
    with pytest.raises(ValueError, match="loss_unit must be one of"):
        load_table(path, loss_unit="bit")
