"""Which process am I? Rank 0 alone writes shared files (run folder, caches, reports).

Lightning's DDP launcher re-runs the whole command in each process, so ranks are known from the
environment before any process group exists (Lightning, torchrun and SLURM set these).
"""

from __future__ import annotations

import os


def is_global_zero() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if variable in os.environ:
            return os.environ[variable] == "0" and os.environ.get("NODE_RANK", "0") == "0"
    return True


def rank_and_world() -> tuple[int, int]:
    """(global rank, number of processes), from the process group when there is one, else
    from the launcher's environment (torchrun, SLURM), else (0, 1).

    A process Lightning's launcher started sees only LOCAL_RANK / NODE_RANK before its process
    group exists; it counts as a non-zero rank of WORLD_SIZE. That only happens when work is
    shared before the first fit, and rank 0 finished that work alone before it started the
    other processes, so they find it done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank in os.environ and world in os.environ:
            return int(os.environ[rank]), int(os.environ[world])
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        world = int(os.environ["WORLD_SIZE"])
        return (0, world) if is_global_zero() else (min(1, world - 1), world)
    return 0, 1
