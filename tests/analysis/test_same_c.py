"""Approaches 1, 2 and 3 read the same C, for every C kind, N kind and input form of a run store."""

import shutil

import numpy as np
import pytest

from scalefit.fitting.sources import read_runs, store_curves
from scalefit.store import tables
from scalefit.sweep.run import run_sweep
from scalefit.training import corpus

FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "heapq.py", "bisect.py"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sizes, two token counts: N_total, N_non_embedding and N_active all differ from 6N's count."""
    tmp = tmp_path_factory.mktemp("same_c")
    src = tmp / "corpus"
    src.mkdir()
    for name in FILES:
        shutil.copy(corpus.stdlib_root() / name, src / name.replace("/", "_"))
    f = tmp / "g.toml"
    f.write_text(f'[sweep]\nname = "g"\ndesign = "grid"\ncorpus = "{src}"\n[model]\nseq_len = 32\n'
                 '[train]\nbatch_size = 8\nn_evals = 3\neval_batches = 2\nlog_every = 5\ncheckpoint_every = 50\n'
                 '[grid]\nsizes = ["d16-l1", "d32-l1"]\ntokens = [6400, 12800]\n')
    run_sweep(f, tmp / "runs", progress=False, log=lambda s: None)
    return tmp / "runs"


@pytest.mark.parametrize("n_kind", ["total", "non-embedding", "active"])
@pytest.mark.parametrize("c_kind", ["6ND", "exact"])
def test_curves_and_final_points_share_c(store, tmp_path, n_kind, c_kind):
    table = read_runs(store, n_kind=n_kind, c_kind=c_kind)
    assert table.c_kind == c_kind
    # Approach 1 reads the curves; each run's last curve point is its final point, which Approaches 2
    # (IsoFLOP budgets) and 3 (the fit) read from the table.
    curves = store_curves(store, table).frame
    last = curves.sort_values("D").groupby("run").last()
    final = table.frame.set_index("run")
    np.testing.assert_allclose(last.loc[final.index, "C"], final["C"], rtol=1e-12)
    np.testing.assert_allclose(last.loc[final.index, "N"], final["N"], rtol=0)
    # The same runs exported and read back as a table, or passed as a DataFrame, give the same C.
    out = tables.export(store, tmp_path / "runs.csv", n_kind=n_kind, c_kind=c_kind)
    for other in (read_runs(out, n_kind=n_kind, c_kind=c_kind),
                  read_runs(tables.load(store, n_kind=n_kind, c_kind=c_kind), n_kind=n_kind)):
        o = other.frame.set_index("run")
        np.testing.assert_allclose(o.loc[final.index, "C"], final["C"], rtol=1e-12)
        assert other.c_kind == c_kind and other.n_kind == n_kind


def test_a_run_store_gives_the_moe_laws_their_e(store):
    """E = each run's n_expert (1 for these dense runs), carried for the MoE laws; N in the kind asked."""
    table = read_runs(store, n_kind="active")
    assert set(table.frame["E"]) == {1.0} and "E carried from column 'E'" in table.notes
