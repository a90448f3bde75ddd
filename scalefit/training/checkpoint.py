"""Checkpoints of the training state: every leaf of the TrainState pytree in one npz file.

The file (``ckpt/state.npz`` of the run folder, scalefit.store.records.CHECKPOINT_FILE) is replaced
atomically (scalefit.atomic), so a run killed mid-write keeps its previous checkpoint. No pickle: the
tree structure is rebuilt from a freshly initialized state on load. The run folder's other files are
scalefit.store's.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from pathlib import Path

import jax
import numpy as np

from scalefit.atomic import atomic_write_bytes
from scalefit.store.records import CHECKPOINT_FILE

log = logging.getLogger(__name__)  # unconfigured, a warning reaches stderr as its bare message


def save_checkpoint(run_dir: Path, state, extra: dict[str, float]) -> None:
    """Save every leaf of ``state`` (a pytree) plus scalar ``extra`` values to ckpt/state.npz.

    Leaves are whole host arrays (`scalefit.training.parallel.to_host` gathers sharded ones), stored in
    ``jax.tree.flatten`` order, so the file does not depend on the devices that wrote it; the tree
    structure is not pickled but rebuilt from a freshly initialized state on load, which also checks
    that the run's config still matches.
    """
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays.update({f"extra_{k}": np.asarray(v) for k, v in extra.items()})
    arrays["n_leaves"] = np.asarray(len(leaves))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_FILE, buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint file that does not read (truncated, or not an npz of ours); names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: damaged checkpoint ({reason})")
        self.path = Path(path)  # the file


# What numpy and zipfile raise on a cut or foreign file: not a zip, a zip cut short, a member that
# inflates wrong or fails its CRC, a missing key, pickled data (refused: allow_pickle stays False).
_DAMAGE = (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, zlib.error)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the checkpoint, read in full (so a cut or corrupt member fails here, by its CRC)."""
    try:  # our own handle: np.load leaves its file open when the zip does not read
        with open(path, "rb") as fh, np.load(fh) as z:
            return {k: z[k] for k in z.files}
    except _DAMAGE as e:
        raise CheckpointError(path, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None


def load_checkpoint(run_dir: Path, like):
    """Restore a state saved by :func:`save_checkpoint` into the structure of ``like``.

    ``like``: a pytree of arrays or `jax.ShapeDtypeStruct`s. Returns ``(state, extra)`` with numpy leaves
    (whole arrays, for any device layout), or ``None`` when the run has no checkpoint. CheckpointError
    when the file does not read; ValueError when the saved leaves do not match ``like`` in number, shape
    or dtype (the run directory holds another model).
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    leaves, treedef = jax.tree.flatten(like)
    z = _arrays(path)
    if "n_leaves" not in z or any(f"leaf_{i:05d}" not in z for i in range(int(z["n_leaves"]))):
        raise CheckpointError(path, "arrays missing")
    n = int(z["n_leaves"])
    if n != len(leaves):
        raise ValueError(f"{path}: checkpoint has {n} arrays, the configured model needs {len(leaves)}")
    loaded = []
    for i, ref in enumerate(leaves):
        a = z[f"leaf_{i:05d}"]
        if a.shape != tuple(ref.shape) or a.dtype != np.dtype(ref.dtype):
            raise ValueError(
                f"{path}: array {i} is {a.dtype}{list(a.shape)}, the configured model needs "
                f"{np.dtype(ref.dtype)}{list(ref.shape)}")
        loaded.append(a)
    extra = {k[len("extra_"):]: z[k].item() for k in z if k.startswith("extra_")}
    return jax.tree.unflatten(treedef, loaded), extra


def checkpoint_step(run_dir: Path) -> int:
    """Optimizer steps of the run folder's checkpoint (0 when it has none or it does not read), read
    without JAX: the step counter is the last leaf of the saved TrainState."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return 0
    try:
        z = _arrays(path)
        return int(z[f"leaf_{int(z['n_leaves']) - 1:05d}"])
    except (CheckpointError, KeyError, ValueError, TypeError):
        return 0


def set_aside_if_damaged(run_dir: Path) -> Path | None:
    """Move a checkpoint that does not read to ``ckpt/state.npz.damaged-<n>`` and say so (a warning naming
    both files); returns the new path, or None when the checkpoint reads or there is none.

    The run then starts again from its last good state: its parent's final checkpoint for a ladder branch
    (copied in again by the sweep), else step 0. Nothing is deleted: the damaged file stays for a look.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        z = _arrays(path)
        if "n_leaves" not in z or f"leaf_{int(z['n_leaves']) - 1:05d}" not in z:
            raise CheckpointError(path, "arrays missing")
    except CheckpointError as e:
        k = 1
        while (aside := path.with_name(f"{path.name}.damaged-{k}")).exists():
            k += 1
        path.rename(aside)
        log.warning(f"warning: {e}; moved to {aside.name}, and the run starts again from its last good state")
        return aside
    return None
