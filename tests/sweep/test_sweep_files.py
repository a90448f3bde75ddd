"""Every sweep file of the reliability audit (tests/data/audit_sweeps): a plan, or one clear error.

Each case goes through the command line (`scalefit sweep plan`), so the exit code is checked too: 2 and one
message naming the file, the line, the table and the key for bad input; nothing is written outside the
folders the command was given (the corpus cache under $SCALEFIT_CACHE).
"""

import re
import shutil
from pathlib import Path

import pytest

from scalefit import cli
from scalefit.sweep.plan import SweepFileError, read_sweep_file

AUDIT = Path(__file__).resolve().parents[1] / "data" / "audit_sweeps"
TRAIN_KEYS = re.escape("['batch_size', 'beta1', 'beta2', 'checkpoint_every', 'eps', 'eval_batches', 'grad_clip', "
                       "'log_every', 'lr', 'min_lr_ratio', 'n_evals', 'schedule', 'schedule_table', 'seed', 'warmup_frac', "
                       "'warmup_steps', 'weight_decay']")

# case file -> the message after "<file>" (a regular expression). Audit case numbers in the comments.
REFUSED = {
    "budgets_big.toml": r", line 8: \[isoflop\] budgets: expected a list, got 'big' \(a string\)",  # S6
    "budgets_str123.toml": r", line 8: \[isoflop\] budgets: expected a list, got '123' \(a string\)",  # S7
    "budgets_scalar.toml": r", line 8: \[isoflop\] budgets: expected a list, got 10000000000.0 \(a number\)",  # S8
    "budgets_empty.toml": r", line 8: \[isoflop\] budgets: expected a non-empty list, got \[\]",  # S9
    "budgets_neg.toml": r", line 8: \[isoflop\] budgets\[0\]: expected a value > 0(\.0)?, got -10000000000.0",  # S10
    "budgets_inf.toml": r", line 8: \[isoflop\] budgets\[0\]: expected a finite number, got inf",  # S10
    "budgets_nan.toml": r", line 8: \[isoflop\] budgets\[0\]: expected a finite number, got nan",  # S10
    "budget_tiny.toml": r": budget of 1000 FLOPs \(exact\) is smaller than one optimizer step",  # S11
    "grid_tokens_below_step.toml": r": budget of 100 tokens is smaller than one optimizer step",  # S11
    "sizes0.toml": r", line 9: \[isoflop\] sizes_per_budget: expected a value >= 1, got 0 \(an integer\)",  # S12
    "sizesneg.toml": r", line 9: \[isoflop\] sizes_per_budget: expected a value >= 1, got -2",  # S12
    "tpp0.toml": r", line 9: \[isoflop\] tokens_per_param: expected a value > 0(\.0)?, got 0 \(an integer\)",  # S13
    "valfrac_str.toml": r", line 4: \[sweep\] val_fraction: expected a number, got 'x' \(a string\)",  # S14
    "valfrac_bad.toml": r", line 4: \[sweep\] val_fraction: expected a value < 1(\.0)?, got 1.5",  # S14
    "grid_tokens_str.toml": r", line 18: \[grid\] tokens\[0\]: expected a number, got '1e5' \(a string\)",  # S15
    "lr_str.toml": r", line 11: \[train\] lr: expected a number, got 'fast' \(a string\)",  # S15
    "lr_bool.toml": r", line 11: \[train\] lr: expected a number, got true \(a boolean\)",  # S16
    "wd_bool.toml": r", line 11: \[train\] weight_decay: expected a number, got true \(a boolean\)",  # S16
    "batch_float.toml": r", line 10: \[train\] batch_size: expected an integer, got 8.5 \(a number\)",  # S17
    "ckpt_every0.toml": r": \[train\] TrainConfig.checkpoint_every must be a positive integer, got 0",  # S17
    "n_evals_neg.toml": r": \[train\] TrainConfig.n_evals must be a positive integer, got -3",  # S17
    "schedule_bad.toml": r": \[train\] TrainConfig.schedule must be one of \('cosine', 'constant', 'wsd', 'table'\), got 'linear'",  # S17
    "seqlen_str.toml": r", line 7: \[model\] seq_len: expected an integer, got '64' \(a string\)",  # S17
    "dtype_bad.toml": r": \[model\] ModelConfig.compute_dtype must be one of \('float32', 'bfloat16'\)",  # S17
    "seed_str.toml": r", line 11: \[train\] seed: expected an integer, got 'abc' \(a string\)",  # S18
    "seed_float.toml": r", line 11: \[train\] seed: expected an integer, got 1.5 \(a number\)",  # S18
    "seed_neg.toml": r", line 11: \[train\] seed: expected a value >= 0, got -1 \(an integer\)",  # S19
    "tie_str.toml": r", line 8: \[model\] tie_embeddings: expected true or false, got 'no' \(a string\)",  # S20
    "ladder_str.toml": r", line 6: \[model\] ladder: expected a list, got 'd16-l1' \(a string\)",  # S21
    "moe_topk_only.toml": r": \[moe\] experts = 2: every top_k \[4\] exceeds the expert count",  # S23
    "moe_expert0.toml": r", line 10: \[moe\] experts\[0\]: expected a value >= 1, got 0 \(an integer\)",  # S24
    "moe_expertfloat.toml": r", line 10: \[moe\] experts\[0\]: expected an integer, got 2.7 \(a number\)",  # S24
    "wsd_cool_bad.toml": r", line 12: \[wsd-ladder\] cooldown_frac: expected a value <= 1(\.0)?, got 2.0",  # S26
    "sweep_as_array.toml": r", line 1: sweep is an array of tables \[\[...\]\]; expected one table \[sweep\]",  # S2
    "unparsable.toml": r": not valid TOML \(Illegal character",  # S1
    "dup_key.toml": r": not valid TOML \(Cannot overwrite a value \(at line 11",  # S1
    "unknownkey.toml": rf", line 11: unknown key 'batchsize' in \[train\]; allowed keys: {TRAIN_KEYS}",  # S1
    "unknowntable.toml": r", line 20: unknown table \[extra\]; expected one of \['grid', 'isoflop'",  # S1
    "train_tokens.toml": r", line 11: unknown key 'tokens' in \[train\]",  # the budget is the design's
    "pyobj.toml": r", line 11: unknown key '__class__' in \[train\]",  # S22
    "pyobj2.toml": r", line 20: unknown key '__init__' in \[train\]",  # S22
    "empty.toml": r": no \[sweep\] design; set design to one of \('isoflop', 'grid', 'wsd-ladder', 'moe'\)",  # S3
    "design_bad.toml": r", line 3: \[sweep\] design must be one of .*, got 'grdi'",  # S3
    "no_design_table.toml": r": design 'grid' needs a \[grid\] table",  # S3
    "family_bad.toml": r", line 6: \[model\] family: expected one of 'dense' or 'moe', got 'sparse'",
    "grid_sizes_unknown.toml": r": unknown model preset 'd999'; known presets: d16-l1, ",
    "seqlen_huge.toml": r": budget of 1e\+05 tokens is smaller than one optimizer step",
}
PLANNED = {"moe_topk.toml": r"warning: moe: 2 experts: top_k \[4\] exceeds the expert count; those pairs are left "
                            r"out",  # S23: said, not dropped silently
           "tiny.toml": r"tiny: design grid, 6 runs"}


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture
def where(tmp_path, monkeypatch):
    """A working folder holding a tiny corpus; the corpus cache in its own folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALEFIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    return tmp_path


def _plan(where, name, capsys):
    shutil.copy(AUDIT / name, where / name)
    before = _tree(where)
    rc = cli.main(["sweep", "plan", str(where / name), "--no-calibrate", "--corpus", str(where / "c.txt")])
    out = capsys.readouterr()
    new = {p for p in _tree(where) - before if p.parts[0] != "cache"}
    assert not new, f"{name} wrote {new}"
    return rc, out


def test_every_audit_case_is_listed():
    assert {p.name for p in AUDIT.glob("*.toml")} == set(REFUSED) | set(PLANNED)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_bad_sweep_file_gets_one_clear_error(where, name, capsys):
    rc, out = _plan(where, name, capsys)
    assert rc == 2, out
    assert "Traceback" not in out.err and not out.out
    msg = out.err.strip()
    assert re.match(rf"scalefit: error: {re.escape(str(where / name))}{REFUSED[name]}", msg), msg
    assert msg.count("\n") == 0, msg  # one line


@pytest.mark.parametrize("name", sorted(PLANNED))
def test_a_sweep_file_that_plans_says_what_it_left_out(where, name, capsys):
    rc, out = _plan(where, name, capsys)
    assert rc == 0, out.err
    assert re.search(PLANNED[name], out.out), out.out


def test_several_wrong_values_are_each_named(where, capsys):
    f = where / "two.toml"
    f.write_text((AUDIT / "lr_bool.toml").read_text().replace("n_evals = 3", 'n_evals = "3"'))
    rc = cli.main(["sweep", "plan", str(f), "--no-calibrate"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{f}, line 11: [train] lr: expected a number, got true (a boolean)" in err
    assert f"{f}, line 12: [train] n_evals: expected an integer, got '3' (a string)" in err


def test_a_folder_or_binary_bytes_as_a_sweep_file(where, capsys):  # S4, S5
    (where / "dir.toml").mkdir()
    assert cli.main(["sweep", "plan", str(where / "dir.toml"), "--no-calibrate"]) == 2
    assert capsys.readouterr().err.startswith(f"scalefit: error: no sweep file {where / 'dir.toml'}: not a file")
    with pytest.raises(SweepFileError, match=f"^{where / 'dir.toml'}: is a folder, expected a sweep file"):
        read_sweep_file(where / "dir.toml")  # the library's own reader, called with a folder
    (where / "bin.toml").write_bytes(b"[sweep]\nname = \"\x80\x81\"\n")
    assert cli.main(["sweep", "plan", str(where / "bin.toml"), "--no-calibrate"]) == 2
    assert capsys.readouterr().err.strip() == (f"scalefit: error: {where / 'bin.toml'}: not a text file (byte 16 is "
                                               "not UTF-8); a sweep file is UTF-8 TOML")
