"""The split of a run's wall time, the start-up charged once, and the overhead line."""

import time

import pytest

from scalefit.store.records import MetricRecord
from scalefit.sweep import timing
from scalefit.sweep.timing import StartupClock, Timing, split_wall, summarize_overhead


def _rec(step, eval_loss=None):
    return MetricRecord(step=step, tokens=step, flops_6N=0.0, flops_exact=0.0, train_loss=1.0, eval_loss=eval_loss,
                        lr=1e-3, grad_norm=1.0, wall_time=0.0)


def test_split_wall_attributes_evaluations_checkpoints_and_setup():
    # 1 s of setup before step 1 (an evaluation), then 0.1 s a step; step 4's interval also
    # evaluates (+0.5 s), the checkpoint after step 6 costs 0.3 s, the files at the end 0.2 s.
    marks = [(1.1, _rec(1, 2.0)), (1.2, _rec(2)), (1.3, _rec(3)), (1.9, _rec(4, 1.9)), (2.0, _rec(5)),
             (2.1, _rec(6)), (2.5, _rec(7)), (2.6, _rec(8))]
    t = split_wall(marks, 0.0, 2.8, startup=0.7, start_step=0, checkpoint_every=6)
    assert t.steps == 8 and t.train == pytest.approx(0.8)
    assert t.setup_compile == pytest.approx(1.0) and t.evaluation == pytest.approx(0.5)
    assert t.checkpoint == pytest.approx(0.3 + 0.2) and t.startup == 0.7
    assert t.wall == pytest.approx(3.5) and t.other == pytest.approx(0.0, abs=1e-9)
    assert t.overhead_frac == pytest.approx(1 - 0.8 / 3.5)


def test_a_resumed_call_counts_its_own_steps():
    t = split_wall([(0.5, _rec(21)), (0.6, _rec(22))], 0.0, 0.6, startup=0.0, start_step=20, checkpoint_every=100)
    assert t.steps == 2 and t.train == pytest.approx(0.2)


def test_startup_is_charged_once_per_clock():
    clock = StartupClock()
    first = clock.take()
    assert first == pytest.approx(time.time() - timing.PROCESS_START, abs=1.0) and first > 0
    assert clock.take() == 0.0 and StartupClock().take() > 0  # another executor's clock pays again


def test_summarize_overhead():
    assert summarize_overhead({}) == "no runs trained"
    line = summarize_overhead({"a": Timing(10.0, 8.0, 1.0, 1.0, 0.0, 0.0, 5),
                               "b": Timing(10.0, 6.0, 0.0, 2.0, 1.0, 1.0, 5)})
    assert line.startswith("2 runs: wall 20.0s, training 14.0s, overhead 30.0% (worst run 40.0%")
