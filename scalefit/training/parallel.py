"""The device mesh of a run and where its state and batches live on it (`jax.sharding`).

One mesh axis, ``data``, over the run's devices (every device of every process by default; several
processes are joined by `jax.distributed.initialize`, docs/training.md). Each batch is split over the
axis; the training state is either replicated on every device (data parallelism: XLA all-reduces the
gradients) or, with ``ComputeConfig.params == "fsdp"``, every parameter and optimizer moment is sharded
over the axis on its largest dimension the device count divides (ZeRO-3 / FSDP, Rajbhandari et al. 2020;
Zhao et al. 2023): the step gathers the parameters before the forward pass and reduce-scatters the
gradients, so the optimizer update runs on each device's shard only.

The train step is the same program for one device and many: the layout enters it only as sharding
constraints, which a one-device mesh makes no-ops. Host copies (`to_host`) are whole arrays, gathered
from every process, so a checkpoint does not depend on the device count it was written with.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scalefit.training import attention
from scalefit.training.config import ComputeConfig, ModelConfig

DATA = "data"  # the mesh axis the batch (and, under FSDP, the state) is split over


@dataclass(frozen=True)
class Placement:
    """How one run is laid out on its devices. Hashable: compiled steps are cached on it."""

    mesh: Mesh  # 1-D over the run's devices, axis DATA
    params: str  # "replicated" or "fsdp" (ComputeConfig.params)
    attention: str  # the resolved attention kernel, a name in scalefit.training.attention.KERNELS

    @property
    def size(self) -> int:
        """Devices on the data axis."""
        return self.mesh.size

    @property
    def sharded(self) -> bool:
        """True when the state is split over several devices (FSDP on more than one)."""
        return self.params == "fsdp" and self.size > 1

    @property
    def batch(self) -> NamedSharding:
        """Sequences of a batch [B, T] split over the data axis."""
        return NamedSharding(self.mesh, P(DATA))

    @property
    def replicated(self) -> NamedSharding:
        """A whole copy on every device."""
        return NamedSharding(self.mesh, P())

    def leaf(self, shape: tuple[int, ...]) -> NamedSharding:
        """Where a state array of ``shape`` lives: replicated, or under FSDP sharded on its largest axis
        that the device count divides (the first such when several tie); arrays no axis of which it
        divides stay replicated."""
        if not self.sharded:
            return self.replicated
        axes = [i for i, s in enumerate(shape) if s % self.size == 0]
        if not axes:
            return self.replicated
        best = max(axes, key=lambda i: (shape[i], -i))
        return NamedSharding(self.mesh, P(*([None] * best + [DATA])))

    def shardings(self, like):
        """A pytree of shardings for a pytree of arrays (or `jax.ShapeDtypeStruct`s) ``like``."""
        return jax.tree.map(lambda a: self.leaf(np.shape(a)), like)

    def put(self, tree, shardings):
        """Host arrays (the same whole values in every process) -> device arrays laid out as ``shardings``."""
        return jax.tree.map(_put, tree, shardings)

    def put_batch(self, x: np.ndarray) -> jax.Array:
        """One host batch [B, ...] split over the data axis."""
        return _put(x, self.batch)

    def check_batch(self, batch_size: int) -> None:
        """ValueError unless the data axis divides the batch."""
        if batch_size % self.size:
            raise ValueError(f"batch_size {batch_size} does not split over {self.size} devices: use a batch size "
                             f"that {self.size} divides, or ComputeConfig(devices=...) (--devices) that divides it")


def _put(x, sharding: NamedSharding) -> jax.Array:
    x = np.asarray(x)
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    # Several processes: each places the slices its own devices hold (every process has the whole value).
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def placement(compute: ComputeConfig, model_cfg: ModelConfig) -> Placement:
    """The mesh of ``compute.devices`` devices (all when None) and the attention kernel for ``model_cfg``."""
    devices = jax.devices()
    n = len(devices) if compute.devices is None else compute.devices
    if n > len(devices):
        raise ValueError(f"ComputeConfig.devices = {n}, but JAX sees {len(devices)} device(s): {devices}")
    kernel = attention.resolve(compute.attention, jax.default_backend(), model_cfg.compute_dtype)
    params = compute.params if n > 1 else "replicated"  # one device holds everything either way: one program
    return Placement(Mesh(np.asarray(devices[:n]), (DATA,)), params, kernel)


def single_device(model_cfg: ModelConfig) -> Placement:
    """One device, state replicated, the backend's fastest attention: the default of a bare train step."""
    return placement(ComputeConfig(devices=1), model_cfg)


def constrain(tree, shardings):
    """`jax.lax.with_sharding_constraint` (inside a jitted function): a no-op on a one-device mesh."""
    return jax.lax.with_sharding_constraint(tree, shardings)


def to_host(tree):
    """Whole numpy arrays of a pytree of device arrays, gathered from every process (a collective: every
    process must call it)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def is_writer() -> bool:
    """True in the process that writes the run folder (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0
