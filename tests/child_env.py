"""The environment for the subprocesses tests start (training jobs, ranks, examples)."""

from __future__ import annotations

import os


def child_env(**overrides: str) -> dict[str, str]:
    """``os.environ`` without ``WANDB_*`` (an earlier test's run leaves ``WANDB_SERVICE`` pointing at
    its own, possibly finished, W&B service), offline, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", **overrides}
