"""Test-side support for OLMo-core on a CPU: Triton's interpreter, with one kernel config.

OLMo-core's MoE forward runs Triton kernels (``olmo_core/kernels/moe.py``) and has no pure-torch
path. On a CPU they run under Triton's interpreter (``TRITON_INTERPRET=1``, set before Triton is
imported). Its autotuner would benchmark every config, which the interpreter cannot do ("0 active
drivers"): :func:`use_triton_interpreter` keeps the first config. Test code only, never grokmon's.

Run as a script (``python tests/olmo_core_support.py OUT STEPS EVERY [ddp|fsdp]``, once per rank),
it applies the shim, builds the trainer of ``examples/olmo_core_train.py`` with one more callback
that keeps every ``grokmon/*`` value the trainer's metric loggers receive (what OLMo-core's W&B
callback would log), trains, and writes them to ``OUT/logged.json`` (rank 0).

Example:
    >>> from olmo_core_support import use_triton_interpreter   # doctest: +SKIP
    >>> use_triton_interpreter()                                # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "olmo_core_train.py"


def olmo_core_missing() -> str | None:
    """Why OLMo-core tests cannot run here, or None."""
    for module, package in (("olmo_core", "ai2-olmo-core (pip install grokmon[olmo-core])"), ("triton", "triton")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed"
    return None


def use_triton_interpreter() -> None:
    """Run OLMo-core's Triton kernels in the CPU interpreter, autotuning to the first config only."""
    os.environ["TRITON_INTERPRET"] = "1"
    from triton.runtime import autotuner

    if getattr(autotuner.Autotuner.prune_configs, "_grokmon_shim", False):
        return
    original = autotuner.Autotuner.prune_configs

    def first_config(self, *args, **kwargs):
        return original(self, *args, **kwargs)[:1]

    first_config._grokmon_shim = True
    autotuner.Autotuner.prune_configs = first_config


def _rank_main(out: str, steps: int, every: int, dp: str | None) -> None:
    import json
    from dataclasses import dataclass, field

    import torch
    from olmo_core.distributed.utils import get_rank
    from olmo_core.train import prepare_training_environment, teardown_training_environment
    from olmo_core.train.callbacks import Callback

    example = runpy.run_path(str(EXAMPLE), run_name="olmo_core_example")

    @dataclass
    class LoggedMetrics(Callback):
        """What the trainer hands its metric loggers (W&B, Comet, console), grokmon keys only."""

        logged: dict = field(default_factory=dict)

        def log_metrics(self, step: int, metrics: dict) -> None:
            grok = {k: v for k, v in metrics.items() if k.startswith("grokmon/")}
            if grok:
                self.logged.setdefault(str(step), {}).update(grok)

    recorder = LoggedMetrics()
    prepare_training_environment(seed=0, backend="gloo")
    # 1 process and 2 split a global batch differently: OLMo-core gives rank r the instances r::world,
    # one process runs them in contiguous micro-batches. Terms that depend on which sequences share a
    # forward (the load-balancing loss, tokens dropped over an expert's capacity) would then make the
    # updates differ; without them (capacity = every token: 4 experts / top-2) the update is the same.
    model = example["model_config"](capacity_factor=2.0, lb_loss_weight=None)
    trainer = example["build_trainer"](out, steps=steps, every=every, dp=dp, model=model,
                                       extra_callbacks={"logged": recorder})
    trainer.fit()
    if get_rank() == 0:
        Path(out, "logged.json").write_text(json.dumps(recorder.logged))
    del trainer
    teardown_training_environment()
    torch.set_num_threads(1)


if __name__ == "__main__":
    use_triton_interpreter()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from child_env import exit_rank_process

    _rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    exit_rank_process()
