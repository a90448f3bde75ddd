"""scalefit: small training runs -> trustworthy forecasts for large ones.

    import scalefit as sf
    table = sf.load_table("chinchilla")            # or a CSV / Parquet path, a DataFrame, sf.read_runs(folder)
    result = sf.fit(table, "chinchilla", bootstrap_resamples=1000)   # or "auto": chosen by forecasting
    print(result.report()); result.allocate(5.76e23); sf.forecast(result, C=1e24)
    sf.backtest(table, "chinchilla")               # refit without the largest runs, score the forecast

Conventions (docs/conventions.md): loss in nats per token (natural log); N names which parameters it
counts (`NKind`: total, non-embedding, active); C names how FLOPs were counted (`CKind`: 6ND, exact).
The names below are imported on first use, so `import scalefit` and `scalefit --help` stay fast; the
layout behind them is in docs/design.md.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# Public name -> the module that defines it; the names in _MODULES are the modules themselves.
_API = {
    # vocabulary
    "NKind": "scalefit.conventions", "CKind": "scalefit.conventions",
    # runs in: tables, reference datasets, run stores
    "load_table": "scalefit.fitting.table", "FitTable": "scalefit.fitting.table",
    "read_runs": "scalefit.fitting.sources", "store_curves": "scalefit.fitting.sources",
    "datasets": "scalefit.fitting.datasets",
    # laws and the fit
    "Law": "scalefit.fitting.laws", "LAWS": "scalefit.fitting.laws", "get_law": "scalefit.fitting.laws",
    "fit": "scalefit.fitting.fitter", "Objective": "scalefit.fitting.solver",
    "FitResult": "scalefit.fitting.result", "FitError": "scalefit.fitting.result",
    "FitStatus": "scalefit.fitting.result", "Estimate": "scalefit.fitting.estimate",
    "fit_by": "scalefit.fitting.groups", "GroupFits": "scalefit.fitting.groups", "load_fits": "scalefit.fitting.groups",
    "split_by": "scalefit.fitting.groups", "predict_table": "scalefit.fitting.targets",
    "Allocation": "scalefit.fitting.optimum", "allocate": "scalefit.fitting.optimum",
    # loss curves under a schedule
    "Schedule": "scalefit.fitting.schedules", "read_schedule": "scalefit.fitting.schedules",
    "CurveTable": "scalefit.fitting.curves", "read_curves": "scalefit.fitting.curve_sources",
    "CURVE_LAWS": "scalefit.fitting.laws", "fit_curves": "scalefit.fitting.curvefit",
    "CurveFit": "scalefit.fitting.curvefit", "derived_points": "scalefit.analysis.derived",
    "optimise_schedule": "scalefit.analysis.schedule_opt",
    # choosing the law by forecasts, calibrating intervals
    "Selection": "scalefit.fitting.crossval", "rolling_origin": "scalefit.fitting.crossval",
    "cross_validate": "scalefit.fitting.crossval", "candidates": "scalefit.fitting.choice",
    "Calibration": "scalefit.fitting.calibrate",
    # decisions
    "forecast": "scalefit.analysis.forecast", "Forecast": "scalefit.analysis.forecast",
    "backtest": "scalefit.analysis.backtest", "Backtest": "scalefit.analysis.backtest",
    "compare_approaches": "scalefit.analysis.compare", "approach1": "scalefit.analysis.approach1",
    "approach2": "scalefit.analysis.approach2", "fit_frontier": "scalefit.analysis.frontier",
    "inference_aware_optimal": "scalefit.analysis.allocate", "model_shape": "scalefit.analysis.cost",
    "accelerator_hours": "scalefit.analysis.cost",
    "decide_moe": "scalefit.analysis.moe", "MoEDecision": "scalefit.analysis.moe",
    "model_sheet": "scalefit.analysis.memory", "weight_bytes": "scalefit.analysis.memory",
    "training_bytes": "scalefit.analysis.memory", "kv_cache_bytes": "scalefit.analysis.memory",
    "token_flops": "scalefit.analysis.memory",
    # report
    "build_report": "scalefit.report.build", "plots": "scalefit.report.plots",
    # training and sweeps
    "ModelConfig": "scalefit.training.config", "TrainConfig": "scalefit.training.config",
    "RunSpec": "scalefit.training.config", "PRESETS": "scalefit.training.config",
    "ComputeConfig": "scalefit.training.config",
    "train": "scalefit.training.loop", "plan_sweep": "scalefit.sweep.plan", "run_sweep": "scalefit.sweep.run",
}

_MODULES = {"datasets", "plots"}

__all__ = sorted(_API)


def __getattr__(name: str):
    where = _API.get(name)
    if where is None:
        raise AttributeError(f"module 'scalefit' has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
