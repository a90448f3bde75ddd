"""Checkpoints of the training state: every leaf of the TrainState pytree in one npz file.

The file (``ckpt/state.npz`` of the run folder, scalefit.store.records.CHECKPOINT_FILE) is replaced
atomically (scalefit.atomic), so a run killed mid-write keeps its previous checkpoint. No pickle: the
tree structure is rebuilt from a freshly initialized state on load. The run folder's other files are
scalefit.store's.
"""

from __future__ import annotations

import io
from pathlib import Path

import jax
import numpy as np

from scalefit.atomic import atomic_write_bytes
from scalefit.store.records import CHECKPOINT_FILE


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


def checkpoint_step(run_dir: Path) -> int:
    """Optimizer steps of the run folder's checkpoint (0 when it has none), read without JAX: the step
    counter is the last leaf of the saved TrainState."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return 0
    with np.load(path) as z:
        return int(z[f"leaf_{int(z['n_leaves']) - 1:05d}"])
