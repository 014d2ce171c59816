"""Multi-process data parallelism on the torch backend (launched by torchrun).

Keras 3.15's torch backend has no distribution library (`keras.distribution`
works on JAX only; 3.16's `DataParallel` for torch is not released), so this
module is the thin glue DDP would be: `torch.distributed` (gloo on CPU, nccl
on GPU) to

- start from identical replicas (rank 0's weights broadcast to all);
- sum the gradients of every step across processes with one all-reduce of
  the flattened gradients, before the optimizer (clipping, AdamW) runs, so
  every replica takes the same step;
- give the pretrainer a `ReplicaContext`: each process draws its slice of
  the global batch's prefix lengths and pools the loss over the global
  batch, so the run follows one process's curve on the same global batch.

Each process feeds its own slice of the global batch
(`keras_aim.data.pretraining_dataset(..., num_shards=world, shard_index=
rank)`).

    torchrun --nproc_per_node=2 examples/pretrain.py --distribution=data
"""

import atexit
import os

from keras_aim.distribution.replicas import ReplicaContext


def _torch():
    import torch
    import torch.distributed as dist

    return torch, dist


def initialize(backend=None):
    """Starts the process group from torchrun's environment variables.

    Returns:
        `(rank, world_size)`; `(0, 1)` when not launched by torchrun.
    """
    torch, dist = _torch()
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return 0, 1
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        # A process group still alive when the interpreter finalises can
        # abort the process on its way out ("terminate called without an
        # active exception", seen from a gloo rank after its work was done).
        atexit.register(shutdown)
    return dist.get_rank(), dist.get_world_size()


def shutdown():
    """Destroys the process group, if one is up (registered at exit by
    `initialize`; safe to call again)."""
    _, dist = _torch()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class TorchReplicaContext(ReplicaContext):
    """This process's place in the process group."""

    def __init__(self):
        _, dist = _torch()
        self.rank = dist.get_rank()
        self.num_replicas = dist.get_world_size()

    def index(self):
        return self.rank

    def sum(self, x):
        _, dist = _torch()
        x = x.detach().clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x


def _sum_gradients(gradients):
    torch, dist = _torch()
    present = [g for g in gradients if g is not None]
    if not present:
        return gradients
    flat = torch.cat([g.reshape(-1) for g in present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for g in gradients:
        if g is None:
            out.append(None)
            continue
        out.append(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return out


def data_parallel(model):
    """Makes a compiled model train data-parallel across the process group.

    Broadcasts rank 0's variables, wraps the optimizer's `apply` to sum
    the gradients across processes first, and (for an `AIMPretrainer`)
    sets its `replica_context`. Call after `compile`, in every process.

    Returns:
        The model.
    """
    torch, dist = _torch()
    if not dist.is_initialized():
        raise ValueError(
            "torch.distributed is not initialised: launch with torchrun "
            "and call keras_aim.distribution.torch_ddp.initialize() first."
        )
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("Compile the model before making it data-parallel.")
    with torch.no_grad():
        for variable in model.variables:
            value = variable.value
            dist.broadcast(value.data, src=0)
    if hasattr(model, "replica_context"):
        model.replica_context = TorchReplicaContext()
    if not getattr(optimizer, "_keras_aim_summing", False):
        apply = optimizer.apply

        def summed_apply(grads, trainable_variables=None):
            return apply(_sum_gradients(list(grads)), trainable_variables)

        optimizer.apply = summed_apply
        optimizer._keras_aim_summing = True
    return model
