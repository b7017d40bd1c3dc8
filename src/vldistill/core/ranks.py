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
