"""What several subcommand groups share."""

from __future__ import annotations


def key_values(items, float_values: bool = True):
    """(key, value) pairs from repeated KEY=VALUE arguments (values as floats unless told)."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        yield key.strip(), float(value) if float_values else value.strip()
