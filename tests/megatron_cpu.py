"""Test-side shim: run megatron-core's MoE layer on a CPU (never part of grokmon).

megatron-core 0.16 builds its MoE layer for CUDA. On a CPU only the layer runs, and only after:

* a process group (gloo, world size 1) and Megatron's model-parallel state;
* ``torch.cuda.current_device`` answering ``"cpu"``: the router moves its weight, and creates its
  expert-bias buffers, on ``torch.cuda.current_device()``;
* ``moe_utils.te_general_gemm`` defined (as ``None``): without Transformer Engine the name is never
  bound, and the router's gating function reads it (``NameError``);
* the ``allgather`` token dispatcher (``alltoall`` creates a ``torch.cuda.Stream``).

:func:`megatron_on_cpu` applies all of it for the duration of a ``with`` block and undoes it.

Example:
    >>> with megatron_on_cpu():                                     # doctest: +SKIP
    ...     model = TinyMegatronMoE(moe_layer_config(num_moe_experts=6, moe_router_topk=2))
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from launch import free_port
from torch import nn


@contextlib.contextmanager
def megatron_on_cpu() -> Iterator[None]:
    """Process group + model-parallel state + the two CPU patches, undone on exit."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.transformer.moe import moe_utils

    started_group = False
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(free_port())
        dist.init_process_group("gloo", rank=0, world_size=1)
        started_group = True
    had_gemm = hasattr(moe_utils, "te_general_gemm")
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    if not had_gemm:
        moe_utils.te_general_gemm = None
    try:
        parallel_state.initialize_model_parallel()
        yield
    finally:
        parallel_state.destroy_model_parallel()
        torch.cuda.current_device = current_device  # type: ignore[assignment]
        if not had_gemm:
            del moe_utils.te_general_gemm
        if started_group:
            dist.destroy_process_group()


def moe_layer_config(**overrides: Any):
    """A tiny ``TransformerConfig`` for one CPU MoE layer (hidden 16, float32, local experts)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    settings = dict(num_layers=2, hidden_size=16, ffn_hidden_size=32, num_attention_heads=4, num_moe_experts=6,
                    moe_router_topk=2, moe_token_dispatcher_type="allgather", add_bias_linear=False,
                    use_cpu_initialization=True, moe_grouped_gemm=False, bf16=False, params_dtype=torch.float32)
    settings.update(overrides)
    return TransformerConfig(**settings)


class _Block(nn.Module):
    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp


class TinyMegatronMoE(nn.Module):
    """Token ids ``[B, S]`` -> embedding -> sequence-first ``[S, B, H]`` -> Megatron MoE layers.

    The layers sit at ``decoder.layers.{i}.mlp`` as in Megatron's ``GPTModel``, so the routers are at
    ``decoder.layers.{i}.mlp.router``. Returns the hidden states, batch-first (no LM head).
    """

    def __init__(self, config: Any, vocab_size: int = 64, seed: int = 0):
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
        from megatron.core.transformer.moe.moe_layer import MoELayer

        super().__init__()
        torch.manual_seed(seed)
        spec = get_gpt_layer_local_spec(num_experts=config.num_moe_experts, moe_grouped_gemm=False)
        self.embed = nn.Embedding(vocab_size, config.hidden_size)
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(_Block(MoELayer(config, spec.submodules.mlp.submodules))
                                            for _ in range(config.num_layers))
        with torch.no_grad():  # a wider gate than Megatron's init, so that the top-k choice is clear-cut
            for block in self.decoder.layers:
                block.mlp.router.weight.normal_(0.0, 0.5)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids).transpose(0, 1).contiguous()  # [S, B, H], Megatron's layout
        for block in self.decoder.layers:
            out, _ = block.mlp(h)
            h = h + out
        return h.transpose(0, 1)
