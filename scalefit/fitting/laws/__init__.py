"""Scaling laws as data (`Law`) and the registry of the shipped ones.

A law outside the registry works everywhere a registered one does: pass the `Law` object itself.
`get_law("chinchilla[E=1.6]")` is the Chinchilla law with E held at 1.6 (`Law.with_fixed`).
"""

from __future__ import annotations

import re

from scalefit.fitting.laws.base import Law, lse, product, safe_log
from scalefit.fitting.laws.chinchilla import CHINCHILLA
from scalefit.fitting.laws.constrained import DATA_CONSTRAINED
from scalefit.fitting.laws.farseer import FARSEER
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

_PINNED = re.compile(r"^([^\[\]]+)\[(.+)\]$")


def get_law(name: str | Law) -> Law:
    """A law by name (or the law itself). "name[K=V, ...]" pins parameters K of law `name` at V.

    ValueError naming the known laws for an unknown name.
    """
    if isinstance(name, Law):
        return name
    m = _PINNED.match(str(name).strip())
    if m:
        base = get_law(m.group(1))
        pins = {}
        for item in m.group(2).split(","):
            key, sep, value = item.partition("=")
            try:
                pins[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"law {name!r}: expected KEY=NUMBER inside [...], got {item.strip()!r}") from None
        return base.with_fixed(**pins)
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; known laws: {', '.join(sorted(LAWS))} (or NAME[KEY=VALUE] "
                         "to fix parameters)") from None


__all__ = ["LAWS", "Law", "get_law", "lse", "product", "safe_log", "CHINCHILLA", "DATA_CONSTRAINED", "FARSEER",
           "KAPLAN_ND", "kaplan", "saturating_power", "CLARK", "CLARK_E", "JOINT", "FINE_GRAINED", "MOE_LAWS"]
