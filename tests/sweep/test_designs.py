"""The design registry: each entry's keys are the sweep file's allowed keys for its table."""

import pytest

from scalefit.sweep.designs import DESIGNS, Design
from scalefit.sweep.plan import BASE_KEYS, SWEEP_KEYS, SweepFileError, read_sweep_file


def test_sweep_keys_are_assembled_from_the_registry():
    assert set(DESIGNS) == {"isoflop", "grid", "wsd-ladder", "moe"}
    assert all(isinstance(d, Design) for d in DESIGNS.values())
    assert SWEEP_KEYS == {**BASE_KEYS, **{name: d.keys for name, d in DESIGNS.items()}}
    assert not set(BASE_KEYS) & set(DESIGNS)  # a design's table never shadows a base table


def test_unknown_design_lists_the_registry(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[sweep]\ndesign = "lhs"\n[lhs]\nn = 3\n')
    with pytest.raises(SweepFileError, match=r"unknown table \[lhs\]"):
        read_sweep_file(p)
    p.write_text('[sweep]\ndesign = "lhs"\n')
    with pytest.raises(SweepFileError, match=r"line 2: \[sweep\] design must be one of \('isoflop', 'grid', "
                                             r"'wsd-ladder', 'moe'\), got 'lhs'"):
        read_sweep_file(p)


def test_a_design_error_names_the_file(tmp_path):
    from scalefit.sweep.plan import plan_sweep

    p = tmp_path / "l.toml"
    p.write_text('[sweep]\ndesign = "wsd-ladder"\ncorpus = "' + str(tmp_path) + '"\n[train]\nschedule = "wsd"\n'
                 '[wsd-ladder]\nsizes = ["d16-l1"]\ntokens = [2560]\n')
    (tmp_path / "a.txt").write_text("x" * 5000)
    with pytest.raises(SweepFileError, match=rf"^{p}: \[train\] schedule cannot be set for a wsd-ladder"):
        plan_sweep(p)
