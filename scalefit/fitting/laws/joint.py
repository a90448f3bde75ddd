"""One curve law across model sizes: its coefficients as functions of N, fitted to every size at once.

A curve law fitted per size says nothing about a size not trained. Joined across sizes, each coefficient
q of the base law (`scalefit.fitting.laws.curves`) becomes a function of the point's model size N:

    shared:      q(N) = q                                   (one coefficient)
    power:       q(N) = q (N / N_ref)^k_q                   (two: q at N_ref and its exponent k_q)
    chinchilla:  q(N) = E + A_N (N / N_ref)^-alpha_N        (three; for L0, the Chinchilla terms in N,
                                                            Hoffmann et al. 2022: L0 is the loss at unlimited
                                                            data, E + A / N^alpha)

so small models' curves forecast a larger model's curve. The Chinchilla law's data term does not depend
on N (B / D^beta), which is why the multi-power law's A and alpha default to shared; its loss-drop amplitude
B grows with N in Luo et al.'s per-size fits (364, 438, 523 at 25M, 100M, 400M), hence a power. A form
needs at least as many distinct sizes as it has coefficients: with two sizes L0 can only be a power
(`joint(..., L0="power")`); the fit refuses a design that cannot identify its forms.
"""

from __future__ import annotations

import numpy as np

from scalefit.fitting.laws.base import safe_log
from scalefit.fitting.laws.curves import CurveLaw
from scalefit.fitting.laws.sums import CurvePoints
from scalefit.fitting.lazy import jnp

N_REF = 1e8  # the size the coefficients of "power" and "chinchilla" forms are quoted at
FORM_SIZE = {"shared": 1, "power": 2, "chinchilla": 3}  # coefficients (and least distinct sizes) per form


def _names(q: str, form: str) -> tuple[str, ...]:
    return {"shared": (q,), "power": (q, f"k_{q}"), "chinchilla": ("E", "A_N", "alpha_N")}[form]


def joint(base: CurveLaw, name: str | None = None, n_ref: float = N_REF, **forms: str) -> CurveLaw:
    """`base` with each named coefficient varying with N by its form ("shared", "power", "chinchilla");
    coefficients not named are shared. E.g. joint(MULTIPOWER, L0="chinchilla", B="power")."""
    if base.natural is None:
        raise ValueError(f"curve law {base.name} has no `natural` form in its parameters: it cannot be joined")
    unknown = [q for q in forms if q not in base.param_names]
    if unknown:
        raise ValueError(f"{base.name} has no coefficient {unknown[0]!r}; its parameters: "
                         f"{', '.join(base.param_names)}")
    bad = [f for f in forms.values() if f not in FORM_SIZE]
    if bad:
        raise ValueError(f"unknown form {bad[0]!r}; known: {', '.join(FORM_SIZE)}")
    if sum(f == "chinchilla" for f in forms.values()) > 1:
        raise ValueError("only one coefficient can take the chinchilla form (its names E, A_N, alpha_N are one set)")
    plan = tuple((q, forms.get(q, "shared")) for q in base.param_names)
    param_names = tuple(n for q, f in plan for n in _names(q, f))
    if len(set(param_names)) != len(param_names):
        raise ValueError(f"joint law of {base.name}: parameter names collide ({', '.join(param_names)})")
    logs = set(base.log_params)
    # Fit space: logs for positive coefficients (and for E, A_N), the exponents as they are.
    positive = tuple(n in logs or n in ("E", "A_N") for n in param_names)
    theta_names = tuple(f"log_{n}" if pos else n for n, pos in zip(param_names, positive))
    log_n_ref = float(np.log(n_ref))
    label = ",".join(f"{q}={f}" for q, f in plan if f != "shared") or "shared"

    def natural(theta, data):
        logn = jnp.log(data["N"]) - log_n_ref  # [n]
        vals = [jnp.exp(t) if pos else t for t, pos in zip(theta, positive)]
        p, i = {}, 0
        for q, f in plan:
            if f == "shared":
                p[q] = vals[i]
            elif f == "power":
                p[q] = vals[i] * jnp.exp(vals[i + 1] * logn)
            else:
                p[q] = vals[i] + vals[i + 1] * jnp.exp(-vals[i + 2] * logn)
            i += FORM_SIZE[f]
        return p

    def log_loss(theta, data):
        return base.natural(natural(theta, data), data)

    def to_params(theta):
        t = np.asarray(theta, float)
        return np.where(np.array(positive), np.exp(np.where(np.array(positive), t, 0.0)), t)

    def from_params(p):
        p = np.asarray(p, float)
        return np.array([safe_log(v) if pos else v for v, pos in zip(p, positive)])

    def grid(points: CurvePoints, logy):
        # The base law's starts on all sizes pooled, every coefficient flat in N (an L0 in the chinchilla form
        # split 70 / 30 between E and its N term, with alpha_N 0.3).
        starts = base.to_params(base.grid(points, logy))  # [S, K_base]
        rows = []
        for s in starts:
            row = []
            for q, f in plan:
                v = s[base.param_names.index(q)]
                row += {"shared": [v], "power": [v, 0.0], "chinchilla": [0.7 * v, 0.3 * v, 0.3]}[f]
            rows.append(from_params(np.array(row)))
        return np.array(rows)

    def unidentified(points: CurvePoints) -> list[tuple[str, tuple[str, ...]]]:
        out = [(why, tuple(n for q, f in plan if q in qs for n in _names(q, f)))
               for why, qs in base.unidentified(points)]
        if np.any(~np.isfinite(points.N) | (points.N <= 0)):
            return out + [("a joint law needs every curve's model size N (> 0)", param_names)]
        sizes = np.unique(points.N)
        for q, f in plan:
            if FORM_SIZE[f] > len(sizes):
                # The coefficients to pin for the rest to be identified: the N-dependence beyond the sizes.
                pin = _names(q, f)[len(sizes):]
                out.append((f"{len(sizes)} distinct model size(s) cannot identify {q}'s {f} form in N "
                            f"({FORM_SIZE[f]} coefficients); pin {', '.join(pin)}, give it fewer (shared / "
                            "power) or fit more sizes", pin))
        return out

    bounds = {n: base.bounds.get(n, (-np.inf, np.inf)) for n in param_names if n in base.bounds}
    bounds.update({"E": (0.0, np.inf), "A_N": (0.0, np.inf), "alpha_N": (0.0, 3.0)})
    return CurveLaw(
        name=name or f"{base.name}_joint({label})",
        formula=f"{base.formula}; across sizes: {label} (N_ref = {n_ref:g})",
        theta_names=theta_names, param_names=param_names, log_loss=log_loss, to_params=to_params,
        from_params=from_params, grid=grid, spec=base.spec, bounds=bounds,
        param_theta=tuple(range(len(param_names))), unidentified=unidentified,
        log_params=tuple(n for n, pos in zip(param_names, positive) if pos), reads_n=True)


__all__ = ["FORM_SIZE", "N_REF", "joint"]
