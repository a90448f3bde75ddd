"""Run-directory files: atomic JSON, checkpoints of the training state, and the metrics log.

Every file a reader may look at is replaced atomically (write a temporary file in the same folder,
then ``os.replace``), so a run killed at any instant leaves either the old or the new version, never
half of one. The metrics log is the exception by design: it grows line by line, and resuming cuts it
back to the checkpoint (dropping a half-written last line).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jax
import numpy as np

from scalefit.atomic import atomic_write_bytes, read_json, write_json  # noqa: F401 (re-exported for run folders)

CHECKPOINT_FILE = "ckpt/state.npz"


def save_checkpoint(run_dir: Path, state, extra: dict[str, float]) -> None:
    """Save every leaf of ``state`` (a pytree) plus scalar ``extra`` values to ckpt/state.npz.

    Leaves are stored in ``jax.tree.flatten`` order; the tree structure is not pickled but rebuilt
    from a freshly initialized state on load, which also checks that the run's config still matches.
    """
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays.update({f"extra_{k}": np.asarray(v) for k, v in extra.items()})
    arrays["n_leaves"] = np.asarray(len(leaves))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_FILE, buf.getvalue())


def load_checkpoint(run_dir: Path, like):
    """Restore a state saved by :func:`save_checkpoint` into the structure of ``like``.

    Returns ``(state, extra)`` or ``None`` when the run has no checkpoint. ValueError when the saved
    leaves do not match ``like`` in number, shape or dtype (the run directory holds another model).
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    leaves, treedef = jax.tree.flatten(like)
    with np.load(path) as z:
        n = int(z["n_leaves"])
        if n != len(leaves):
            raise ValueError(f"{path}: checkpoint has {n} arrays, the configured model needs {len(leaves)}")
        loaded = []
        for i, ref in enumerate(leaves):
            a = z[f"leaf_{i:05d}"]
            if a.shape != np.shape(ref) or a.dtype != np.asarray(ref).dtype:
                raise ValueError(
                    f"{path}: array {i} is {a.dtype}{list(a.shape)}, the configured model needs "
                    f"{np.asarray(ref).dtype}{list(np.shape(ref))}")
            loaded.append(a)
        extra = {k[len("extra_"):]: z[k].item() for k in z.files if k.startswith("extra_")}
    return jax.tree.unflatten(treedef, loaded), extra


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl file; a half-written last line (from a kill) is ignored.

    A broken line anywhere else means the file was damaged, not interrupted: ValueError with its number.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not raw.endswith(b"\n"):
                break  # the last line, cut mid-write
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


def truncate_metrics(path: Path, last_step: int) -> list[dict]:
    """Keep only records with ``step <= last_step`` (atomically) and return them.

    Called on resume, so steps between the checkpoint and the interruption are logged once, by the
    resumed run, and never twice.
    """
    kept = [r for r in read_metrics(path) if r["step"] <= last_step]
    atomic_write_bytes(Path(path), b"".join((json.dumps(r) + "\n").encode() for r in kept))
    return kept
