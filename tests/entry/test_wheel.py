"""The built wheel, installed in a fresh virtual environment, works from outside the checkout: its
reference data and sweep files travel inside the package."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.entry
def test_wheel_installed_elsewhere_fits_and_plans(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    str(REPO), "-w", str(wheels)], check=True, env=env, capture_output=True)
    (wheel,) = wheels.glob("scalefit_lab-*.whl")
    venv = tmp_path / "venv"
    # The venv borrows the installed dependencies (jax, pandas ...) and gets scalefit only from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, env=env, capture_output=True)
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*args):
        return subprocess.run([str(py), *args], cwd=away, env=env, capture_output=True, text=True, timeout=600)

    where = run("-c", "import scalefit; print(scalefit.__file__)")
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(venv), where
    fitted = run("-m", "scalefit.cli", "fit", "chinchilla", "--holdout", "0")
    assert fitted.returncode == 0, fitted.stderr
    assert "chinchilla: L = E + A/N^alpha + B/D^beta" in fitted.stdout and "240 rows" in fitted.stdout
    planned = run("-m", "scalefit.cli", "sweep", "plan", "quickstart", "--no-calibrate")
    assert planned.returncode == 0, planned.stderr
    assert "quickstart: design isoflop, 16 runs" in planned.stdout
