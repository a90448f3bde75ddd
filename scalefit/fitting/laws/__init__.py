"""Scaling laws as data (`Law`) and the registry of the shipped ones.

A law outside the registry works everywhere a registered one does: pass the `Law` object itself.
`get_law("chinchilla[E=1.6]")` is the Chinchilla law with E held at 1.6 (`Law.with_fixed`).
Laws of whole loss curves (`CURVE_LAWS`, `scalefit.fitting.laws.curves`) are kept apart: they read a
table's schedule sums rather than its columns; `get_law` resolves their names to the unbound law.
"""

from __future__ import annotations

import re

from scalefit.fitting.laws.base import Law, lse, product, safe_log
from scalefit.fitting.laws.chinchilla import CHINCHILLA
from scalefit.fitting.laws.constrained import DATA_CONSTRAINED
from scalefit.fitting.laws.curves import MULTIPOWER, POWER_STEPS, TISSUE, CurveLaw
from scalefit.fitting.laws.farseer import FARSEER
from scalefit.fitting.laws.joint import joint
from scalefit.fitting.laws.moe import CLARK, CLARK_E, FINE_GRAINED, JOINT, MOE_LAWS
from scalefit.fitting.laws.power import KAPLAN_ND, kaplan, saturating_power

LAWS: dict[str, Law] = {
    law.name: law
    for law in [
        CHINCHILLA,
        KAPLAN_ND,
        DATA_CONSTRAINED,
        FARSEER,
        *(kaplan(v) for v in ("N", "D", "C")),
        *(kaplan(v, irreducible=True) for v in ("N", "D", "C")),
        *(saturating_power(v) for v in ("N", "D", "C")),
        *MOE_LAWS,
    ]
}
# Chinchilla with tied exponents (alpha = beta, i.e. a = 0.5): the same object as "chinchilla[a=0.5]".
LAWS["chinchilla_tied"] = CHINCHILLA.with_fixed(a=0.5)

# Laws of loss curves under a schedule, by name. The joint multi-power law varies L0 in the Chinchilla
# form E + A_N (N/1e8)^-alpha_N and the loss-drop amplitude B as a power of N (three sizes or more).
CURVE_LAWS: dict[str, CurveLaw] = {
    law.name: law
    for law in [MULTIPOWER, TISSUE, POWER_STEPS,
                joint(MULTIPOWER, name="multipower_joint", L0="chinchilla", B="power")]
}

_PINNED = re.compile(r"^([^\[\]]+)\[(.+)\]$")


def split_pins(name: str) -> tuple[str, dict[str, float]]:
    """("name", {K: V}) from "name[K=V, ...]" (no pins: an empty dict)."""
    m = _PINNED.match(str(name).strip())
    if not m:
        return str(name).strip(), {}
    pins = {}
    for item in m.group(2).split(","):
        key, sep, value = item.partition("=")
        try:
            pins[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"law {name!r}: expected KEY=NUMBER inside [...], got {item.strip()!r}") from None
    return m.group(1).strip(), pins


def get_law(name: str | Law) -> Law:
    """A law by name (or the law itself). "name[K=V, ...]" pins parameters K of law `name` at V.

    ValueError naming the known laws for an unknown name.
    """
    if isinstance(name, Law):
        return name
    base, pins = split_pins(name)
    if pins:
        return get_law(base).with_fixed(**pins)
    if name in CURVE_LAWS:
        return CURVE_LAWS[name].law()
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; known laws: {', '.join(sorted(LAWS))}; curve laws: "
                         f"{', '.join(sorted(CURVE_LAWS))} (or NAME[KEY=VALUE] to fix parameters)") from None


def get_curve_law(name: str | CurveLaw) -> CurveLaw:
    """A curve law by name (or the law itself); ValueError naming the known ones."""
    if isinstance(name, CurveLaw):
        return name
    try:
        return CURVE_LAWS[str(name).strip()]
    except KeyError:
        raise ValueError(f"unknown curve law {name!r}; known: {', '.join(sorted(CURVE_LAWS))}") from None


__all__ = ["CURVE_LAWS", "CurveLaw", "LAWS", "Law", "get_curve_law", "get_law", "split_pins", "joint", "lse",
           "product", "safe_log", "CHINCHILLA", "DATA_CONSTRAINED", "FARSEER", "KAPLAN_ND", "kaplan",
           "saturating_power", "CLARK", "CLARK_E", "JOINT", "FINE_GRAINED", "MOE_LAWS"]
