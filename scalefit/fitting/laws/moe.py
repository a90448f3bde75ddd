"""Mixture-of-experts laws: what the experts buy, as `Law`s fitted by the same fitter as every other law.

N in all of them is the count of parameters one token uses (`n_kind="active"`: attention, norms,
router and the top-k experts; Clark et al.'s "dense parameter count"), so a routed model and the dense
model it grew from share their N, and FLOPs per token follow it (C ~ 6 N D).

- `CLARK` (Clark et al. 2022, "Unified Scaling Laws for Routed Language Models", ICML, eq. 1 with the
  saturating expert count of Sec. 4.3; the authors' code: google-deepmind/scaling_laws_for_routing,
  example.ipynb): at a fixed training length,

      log10 L(N, E) = a log10 N + b log10 Ê + c log10 N log10 Ê + d,
      1/Ê = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max,

  Ê ~ E between E_start and E_max and saturating at E_max beyond; Ê(1) = E_start. The parameters are
  reported in the paper's base-10 convention; the fit works in natural logs (c_ln = c ln 10, d_ln = d
  ln 10). `effective_params` is the dense N with the same loss (the paper's effective parameter count).
- `CLARK_E`: the same in N and Ê with an irreducible loss, L = a Ê^delta N^(alpha + gamma ln Ê) + c:
  Clark's form for L - c. A pure power law in N keeps falling at the slope of the small models; the
  irreducible term bends it, and which of the two extrapolates better is for a backtest to say.
- `JOINT` (Ludziejewski et al. 2025, "Joint MoE Scaling Laws: Mixture of Experts Can Be Memory
  Efficient", arXiv:2502.05172, eq. 3): dense and routed models in active N, tokens D and Ê,

      L(N, D, E) = a Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c,

  a law that splits a budget into N and D for a given E (E is its condition), so it answers "how many
  experts, at what size, for this budget".
- `FINE_GRAINED` (Krajewski et al. 2024, "Scaling Laws for Fine-Grained Mixture of Experts",
  arXiv:2402.07871, eq. 7): at a fixed expansion rate, granularity G (dense FFN width / expert width)
  lowers the N term,

      L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta.

Every theta below is the log of a positive constant or an exponent itself; E_start and E_max enter as
their logs, so each reported parameter is one fit coordinate and any of them can be pinned
(`get_law("clark_routing[E_max=512]")`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from scalefit.fitting.laws.base import Law, lse, safe_log
from scalefit.fitting.lazy import jnp

LN10 = math.log(10.0)


# ---- the saturating expert count Ê (Clark et al. 2022, Sec. 4.3) ----------------------------------------


def log_ehat(log_e, log_start, log_max):
    """log Ê for log E (arrays) and log E_start, log E_max, in jnp:
    1/Ê = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max. NaN when E_start >= E_max (no saturation)."""
    shift = 1.0 / (jnp.exp(-log_start) - jnp.exp(-log_max))  # (1/E_start - 1/E_max)^-1
    return -lse(-jnp.log(jnp.expm1(log_e) + shift), -log_max)


def expert_count(E, E_start: float, E_max: float) -> np.ndarray:
    """Ê in numpy: E_start at E = 1, about E in between, approaching E_max for E >> E_max."""
    E = np.asarray(E, float)
    if not 0 < E_start < E_max:
        raise ValueError(f"the saturating expert count needs 0 < E_start < E_max, got {E_start}, {E_max}")
    return 1.0 / (1.0 / (E - 1.0 + 1.0 / (1.0 / E_start - 1.0 / E_max)) + 1.0 / E_max)


def _ehat_grid():
    return np.log([1.5, 3.0, 8.0]), np.log([64.0, 512.0, 4096.0])


# ---- Clark et al. 2022: log L bilinear in log N and log Ê ---------------------------------------------
# theta = (a, b, c_ln, d_ln, log E_start, log E_max): ln L = a ln N + b ln Ê + c_ln ln N ln Ê + d_ln.

CLARK_PARAMS = ("a", "b", "c", "d", "E_start", "E_max")


def _clark_log_loss(theta, logx):
    a, b, c, d, ls, lm = theta
    log_n, le = logx[0], log_ehat(logx[1], ls, lm)
    return a * log_n + b * le + c * log_n * le + d


def _clark_to_params(theta):
    with np.errstate(over="ignore"):  # a coordinate run off to a huge value reads as inf, not a warning
        a, b, c, d, ls, lm = np.moveaxis(np.asarray(theta, float), -1, 0)
        return np.stack([a, b, c * LN10, d / LN10, np.exp(ls), np.exp(lm)], axis=-1)


def _clark_from_params(p):
    a, b, c, d, es, em = p
    return np.array([a, b, c / LN10, d * LN10, safe_log(es), safe_log(em)])


def _clark_grid(logx, logy):
    rows = []
    for a, b, c, ls, lm in itertools.product((-0.05, -0.1, -0.2), (-0.05, -0.15), (0.0, 0.01), *_ehat_grid()):
        # d puts the start through the data's middle: ln L = a ln N + d at the median (ln Ê small there).
        rows.append((a, b, c, float(np.median(logy)) - a * float(np.median(logx[0])), ls, lm))
    return np.array(rows)


CLARK = Law(
    name="clark_routing",
    formula="log10 L = a log10 N + b log10 Ê + c log10 N log10 Ê + d, "
            "1/Ê = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max",
    inputs=("N", "E"),
    theta_names=("a", "b", "c_ln", "d_ln", "log_E_start", "log_E_max"),
    param_names=CLARK_PARAMS,
    log_loss=_clark_log_loss,
    to_params=_clark_to_params,
    from_params=_clark_from_params,
    grid=_clark_grid,
    bounds={"a": (-1.0, 0.0), "b": (-1.0, 1.0), "c": (-1.0, 1.0), "d": (-10.0, 10.0), "E_start": (0.0, np.inf),
            "E_max": (0.0, np.inf)},
    param_theta=(0, 1, 2, 3, 4, 5),
    n_kind="active",
)


def effective_params(params, N, E):
    """Clark et al.'s effective parameter count N_bar(N, E): the dense N (E = 1) whose loss the routed
    model of N active parameters and E experts reaches, L(N_bar, 1) = L(N, E). With
    alpha(x) = a + c log10 x,

        N_bar = N^(alpha(Ê) / alpha(E_start)) (Ê / E_start)^(b / alpha(E_start))

    (the authors' effective_param_count; Ê(1) = E_start, so N_bar(N, 1) = N)."""
    p = {k: float(params[k]) for k in CLARK_PARAMS}
    eh = expert_count(E, p["E_start"], p["E_max"])
    alpha = lambda x: p["a"] + p["c"] * np.log10(x)  # noqa: E731
    a1 = alpha(p["E_start"])
    return np.asarray(N, float) ** (alpha(eh) / a1) * (eh / p["E_start"]) ** (p["b"] / a1)


# ---- Clark's form above an irreducible loss: L = a Ê^delta N^(alpha + gamma ln Ê) + c ----------------
# theta = (log a, alpha, delta, gamma, log c, log E_start, log E_max).

CLARK_E_PARAMS = ("a", "alpha", "delta", "gamma", "c", "E_start", "E_max")


def _n_term(la, alpha, delta, gamma, log_n, le):
    return la + delta * le + (alpha + gamma * le) * log_n


def _clark_e_log_loss(theta, logx):
    la, alpha, delta, gamma, lc, ls, lm = theta
    le = log_ehat(logx[1], ls, lm)
    return lse(_n_term(la, alpha, delta, gamma, logx[0], le), lc)


def _clark_e_to_params(theta):
    with np.errstate(over="ignore"):  # a coordinate run off to a huge value reads as inf, not a warning
        la, alpha, delta, gamma, lc, ls, lm = np.moveaxis(np.asarray(theta, float), -1, 0)
        return np.stack([np.exp(la), alpha, delta, gamma, np.exp(lc), np.exp(ls), np.exp(lm)], axis=-1)


def _clark_e_from_params(p):
    a, alpha, delta, gamma, c, es, em = p
    return np.array([safe_log(a), alpha, delta, gamma, safe_log(c), safe_log(es), safe_log(em)])


def _power_scale(logx, logy, alpha, frac):
    """log a that puts a N^alpha at `frac` of the median loss at the median N: a start on the data's scale."""
    return math.log(max(math.exp(float(np.median(logy))) * frac, 1e-12)) - alpha * float(np.median(logx[0]))


def _floors(logy, shifts=(-2.0, -0.5, -0.15)):
    return float(np.min(logy)) + np.array(shifts)


def _clark_e_grid(logx, logy):
    rows = []
    for alpha, delta, gamma, lc, ls, lm in itertools.product((-0.1, -0.3, -0.6), (0.0, -0.1), (0.0, 0.01),
                                                             _floors(logy), *_ehat_grid()):
        rows.append((_power_scale(logx, logy, alpha, 0.5), alpha, delta, gamma, lc, ls, lm))
    return np.array(rows)


CLARK_E = Law(
    name="clark_routing_e",
    formula="L = a Ê^delta N^(alpha + gamma ln Ê) + c, Ê saturating in E (E_start, E_max) as in clark_routing",
    inputs=("N", "E"),
    theta_names=("log_a", "alpha", "delta", "gamma", "log_c", "log_E_start", "log_E_max"),
    param_names=CLARK_E_PARAMS,
    log_loss=_clark_e_log_loss,
    to_params=_clark_e_to_params,
    from_params=_clark_e_from_params,
    grid=_clark_e_grid,
    bounds={"a": (0.0, np.inf), "alpha": (-3.0, 0.0), "delta": (-3.0, 3.0), "gamma": (-1.0, 1.0),
            "c": (0.0, np.inf), "E_start": (0.0, np.inf), "E_max": (0.0, np.inf)},
    param_theta=tuple(range(7)),
    n_kind="active",
)


# ---- Ludziejewski et al. 2025: the joint law in active N, D and Ê -------------------------------------
# theta = (log a, alpha, delta, gamma, log b, beta, omega, zeta, log c, log E_start, log E_max).

JOINT_PARAMS = ("a", "alpha", "delta", "gamma", "b", "beta", "omega", "zeta", "c", "E_start", "E_max")


def _joint_log_loss(theta, logx):
    la, alpha, delta, gamma, lb, beta, omega, zeta, lc, ls, lm = theta
    le = log_ehat(logx[2], ls, lm)
    return lse(_n_term(la, alpha, delta, gamma, logx[0], le), _n_term(lb, beta, omega, zeta, logx[1], le), lc)


def _joint_to_params(theta):
    with np.errstate(over="ignore"):  # a coordinate run off to a huge value reads as inf, not a warning
        t = np.moveaxis(np.asarray(theta, float), -1, 0)
        la, alpha, delta, gamma, lb, beta, omega, zeta, lc, ls, lm = t
        return np.stack([np.exp(la), alpha, delta, gamma, np.exp(lb), beta, omega, zeta, np.exp(lc), np.exp(ls),
                         np.exp(lm)], axis=-1)


def _joint_from_params(p):
    a, alpha, delta, gamma, b, beta, omega, zeta, c, es, em = p
    return np.array([safe_log(a), alpha, delta, gamma, safe_log(b), beta, omega, zeta, safe_log(c),
                     safe_log(es), safe_log(em)])


def _joint_grid(logx, logy):
    rows = []
    for alpha, beta, delta, omega, lc, ls, lm in itertools.product(
            (-0.15, -0.35), (-0.15, -0.35), (0.0, 0.2), (0.0, -0.3), _floors(logy, (-1.0, -0.3)), *_ehat_grid()):
        la = _power_scale(logx, logy, alpha, 0.3)
        lb = math.log(math.exp(float(np.median(logy))) * 0.3) - beta * float(np.median(logx[1]))
        rows.append((la, alpha, delta, 0.0, lb, beta, omega, 0.0, lc, ls, lm))
    return np.array(rows)


JOINT = Law(
    name="joint_moe",
    formula="L = a Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c (Ludziejewski et al. 2025)",
    inputs=("N", "D", "E"),
    theta_names=("log_a", "alpha", "delta", "gamma", "log_b", "beta", "omega", "zeta", "log_c", "log_E_start",
                 "log_E_max"),
    param_names=JOINT_PARAMS,
    log_loss=_joint_log_loss,
    to_params=_joint_to_params,
    from_params=_joint_from_params,
    grid=_joint_grid,
    bounds={"a": (0.0, np.inf), "alpha": (-3.0, 0.0), "delta": (-3.0, 3.0), "gamma": (-1.0, 1.0),
            "b": (0.0, np.inf), "beta": (-3.0, 0.0), "omega": (-3.0, 3.0), "zeta": (-1.0, 1.0),
            "c": (0.0, np.inf), "E_start": (0.0, np.inf), "E_max": (0.0, np.inf)},
    param_theta=tuple(range(11)),
    n_kind="active",
)


# ---- Krajewski et al. 2024: granularity --------------------------------------------------------------
# theta = (log a, alpha, log b, beta, log g, gamma, log c):
#   ln L = LSE(LSE(log g - gamma ln G, log a) - alpha ln N, log b - beta ln D, log c).

FINE_PARAMS = ("a", "alpha", "b", "beta", "g", "gamma", "c")


def _fine_log_loss(theta, logx):
    la, alpha, lb, beta, lg, gamma, lc = theta
    return lse(lse(lg - gamma * logx[2], la) - alpha * logx[0], lb - beta * logx[1], lc)


def _fine_to_params(theta):
    with np.errstate(over="ignore"):  # a coordinate run off to a huge value reads as inf, not a warning
        la, alpha, lb, beta, lg, gamma, lc = np.moveaxis(np.asarray(theta, float), -1, 0)
        return np.stack([np.exp(la), alpha, np.exp(lb), beta, np.exp(lg), gamma, np.exp(lc)], axis=-1)


def _fine_from_params(p):
    a, alpha, b, beta, g, gamma, c = p
    return np.array([safe_log(a), alpha, safe_log(b), beta, safe_log(g), gamma, safe_log(c)])


def _fine_grid(logx, logy):
    # Hoffmann-style scales for a and b (exp 0..25), exponents 0.1-0.5, the G term from a tenth of the
    # N term to as large, gamma 0.3-1.
    rows = []
    for la, alpha, lb, beta, gfrac, gamma, lc in itertools.product(
            (0.0, 5.0, 10.0), (0.1, 0.3, 0.5), (0.0, 5.0, 10.0), (0.1, 0.3, 0.5), (0.1, 1.0), (0.3, 1.0),
            _floors(logy, (-1.0, -0.3))):
        rows.append((la, alpha, lb, beta, la + math.log(gfrac), gamma, lc))
    return np.array(rows)


FINE_GRAINED = Law(
    name="fine_grained_moe",
    formula="L = c + (g/G^gamma + a)/N^alpha + b/D^beta (Krajewski et al. 2024)",
    inputs=("N", "D", "G"),
    theta_names=("log_a", "alpha", "log_b", "beta", "log_g", "gamma", "log_c"),
    param_names=FINE_PARAMS,
    log_loss=_fine_log_loss,
    to_params=_fine_to_params,
    from_params=_fine_from_params,
    grid=_fine_grid,
    bounds={"a": (0.0, np.inf), "alpha": (0.0, 3.0), "b": (0.0, np.inf), "beta": (0.0, 3.0),
            "g": (0.0, np.inf), "gamma": (0.0, 3.0), "c": (0.0, np.inf)},
    param_theta=tuple(range(7)),
    n_kind="active",
)

MOE_LAWS = (CLARK, CLARK_E, JOINT, FINE_GRAINED)

__all__ = ["CLARK", "CLARK_E", "JOINT", "FINE_GRAINED", "MOE_LAWS", "effective_params", "expert_count", "log_ehat"]
