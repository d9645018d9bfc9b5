"""Train a tiny random-init OLMo-core MoE with grokmon's ``GrokkingOLMoCoreCallbackConfig`` (OLMo-core's own Trainer).

One process::

    python examples/olmo_core_train.py runs/olmo --steps 4 --every 2

Two processes, data parallel (``--dp ddp``) or sharded (``--dp fsdp``)::

    torchrun --nproc-per-node 2 examples/olmo_core_train.py runs/olmo --dp fsdp

The grokmon values land in ``OUT/grokmon/grokmon_metrics.jsonl`` (world rank 0) and, through
``trainer.record_metric``, in the trainer's own metric loggers (console, W&B, Comet) as ``grokmon/*``,
with ``grokmon/step`` holding the step of the probe they belong to. The model is built from a
config with random weights and trained on random tokens: replace both with your own, and use
``ProbeSet.from_dataset(...)`` on your training data for the probe.

OLMo-core's MoE forward runs Triton kernels: on a GPU as is. On a CPU only in Triton's interpreter
(``TRITON_INTERPRET=1``, seconds per step even for this tiny model) with its autotuner kept to one
config, else it fails with "0 active drivers": ``python tests/olmo_core_support.py OUT 2 2`` runs
this script's trainer that way (the test's settings).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDatasetConfig, TokenizerConfig
from olmo_core.distributed.parallel import DataParallelType
from olmo_core.distributed.utils import get_rank
from olmo_core.nn.transformer import TransformerConfig
from olmo_core.optim import AdamWConfig
from olmo_core.train import (Duration, Trainer, TrainerConfig, prepare_training_environment,
                             teardown_training_environment)
from olmo_core.train.train_module import TransformerDataParallelConfig, TransformerTrainModuleConfig

from grokmon import MonitorConfig, ProbeSet
from grokmon.integrations.olmo_core import GrokkingOLMoCoreCallbackConfig

VOCAB, SEQ = 128, 8


def model_config(*, capacity_factor: float = 1.0, lb_loss_weight: float | None = 0.01) -> TransformerConfig:
    """A 2-block MoE transformer: 4 experts, top-2, OLMo-core's default softmax router."""
    return TransformerConfig.llama_like_moe(
        d_model=32, vocab_size=VOCAB, n_layers=2, n_heads=4, num_experts=4, top_k=2, expert_hidden_size=32,
        capacity_factor=capacity_factor, lb_loss_weight=lb_loss_weight, z_loss_weight=None,
    )


def write_tokens(path: Path, n_tokens: int = 4096, seed: int = 0) -> Path:
    """Random token ids as an OLMo-core numpy token file (stand-in for a tokenized corpus)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(seed).integers(2, VOCAB, size=n_tokens, dtype=np.uint16)
    ids.tofile(path)
    return path


def build_trainer(out: str, *, steps: int = 4, every: int = 2, dp: str | None = None, global_batch: int = 4,
                  model: TransformerConfig | None = None, extra_callbacks: dict | None = None) -> Trainer:
    """The model, data, probe file and OLMo-core Trainer with grokmon's callback config in it (after
    ``prepare_training_environment``); the monitor is ``trainer.callbacks["grokmon"].monitor``."""
    out_dir = Path(out)
    tokens = out_dir / "data" / "tokens.npy"
    if get_rank() == 0:
        write_tokens(tokens)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()

    torch.manual_seed(0)  # the same random model on every rank
    model = (model or model_config()).build(init_device="cpu")
    dp_config = None if dp is None else TransformerDataParallelConfig(name=DataParallelType(dp))
    train_module = TransformerTrainModuleConfig(
        rank_microbatch_size=2 * SEQ, max_sequence_length=SEQ, optim=AdamWConfig(lr=1e-3), dp_config=dp_config,
    ).build(model)

    tokenizer = TokenizerConfig(vocab_size=VOCAB, eos_token_id=1, pad_token_id=0)
    dataset = NumpyFSLDatasetConfig(tokenizer=tokenizer, paths=[str(tokens)], sequence_length=SEQ,
                                    work_dir=str(out_dir / "data")).build()
    data_loader = NumpyDataLoaderConfig(global_batch_size=global_batch * SEQ, seed=0,
                                        work_dir=str(out_dir / "data")).build(dataset)

    # the probe: fixed samples in a file every rank loads (here random; use ProbeSet.from_dataset in practice)
    probe_file = out_dir / "probe.pt"
    if get_rank() == 0:
        ids = torch.randint(2, VOCAB, (8, SEQ), generator=torch.Generator().manual_seed(1))
        ProbeSet.from_token_ids(ids, groups=["web", "code"] * 4).save(probe_file)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    grokmon = GrokkingOLMoCoreCallbackConfig(
        probe=str(probe_file), monitor=MonitorConfig(every=every, output_dir=str(out_dir / "grokmon")))

    trainer_config = TrainerConfig(save_folder=str(out_dir / "ckpt"), max_duration=Duration.steps(steps),
                                   metrics_collect_interval=1, save_overwrite=True)
    trainer_config = trainer_config.with_callback("grokmon", grokmon)  # built by TrainerConfig.build
    for name, callback in (extra_callbacks or {}).items():
        trainer_config = trainer_config.with_callback(name, callback)
    return trainer_config.build(train_module, data_loader)


def main(out: str, **settings) -> None:
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    prepare_training_environment(seed=0, backend=backend)  # joins the torchrun process group, or starts one
    build_trainer(out, **settings).fit()
    teardown_training_environment()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (checkpoints, data, grokmon JSONL)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--dp", choices=["ddp", "fsdp"], default=None, help="data parallelism (with torchrun)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(args.out, steps=args.steps, every=args.every, dp=args.dp)
