"""The environment for the subprocesses tests start (training jobs, ranks, examples)."""

from __future__ import annotations

import os


def child_env(**overrides: str) -> dict[str, str]:
    """``os.environ`` without ``WANDB_*`` (an earlier test's run leaves ``WANDB_SERVICE`` pointing at
    its own, possibly finished, W&B service), offline, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", **overrides}


def exit_rank_process() -> None:
    """End a test's rank process at once, after its results are written and its group destroyed.

    Objects that still reference the process group (a DDP reducer, an FSDP mesh) are otherwise
    destroyed during interpreter finalization, where gloo's worker threads can abort the process
    ("terminate called without an active exception", pytorch/pytorch#190489, #179291): a failure
    of the test harness, not of the code under test.
    """
    import gc
    import sys

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
