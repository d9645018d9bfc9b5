"""Capture the pathways of a tiny random-init MoE and print grokmon's metrics.

Runs on a laptop CPU in seconds, downloads nothing:

    python examples/quickstart.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import OlmoeConfig, OlmoeForCausalLM

from grokmon import MetricConfig, ProbeSet, capture_pathways, compute_metrics
from grokmon.routing import find_routers


def tiny_olmoe(seed: int = 0) -> OlmoeForCausalLM:
    torch.manual_seed(seed)
    config = OlmoeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, num_experts=16, num_experts_per_tok=4,
        max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )
    return OlmoeForCausalLM(config)


def main() -> None:
    model = tiny_olmoe()
    generator = torch.Generator().manual_seed(0)
    # 64 probe samples of 32 tokens from two "domains": low-id and high-id tokens.
    low = torch.randint(2, 64, (32, 32), generator=generator)
    high = torch.randint(64, 128, (32, 32), generator=generator)
    probe = ProbeSet.from_token_ids(torch.cat([low, high]), groups=["low"] * 32 + ["high"] * 32)

    print(f"routers found: {len(find_routers(model))} "
          f"({type(model).__name__}, {model.config.num_experts} experts, top-{model.config.num_experts_per_tok})")
    result = capture_pathways(
        model, probe.input_ids, probe.attention_mask,
        groups=probe.groups, group_names=probe.group_names, batch_size=16,
    )
    metrics = compute_metrics(result.pathways, config=MetricConfig(per_group=True))
    print(f"probe: {len(probe)} samples, {result.num_tokens} tokens, {result.seconds * 1000:.1f} ms")
    print(f"probe loss: {result.loss_per_sample.mean().item():.4f}")
    width = max(len(k) for k in metrics)
    for key in sorted(metrics):
        print(f"  grokmon/{key:<{width}}  {metrics[key]:.4f}")


if __name__ == "__main__":
    main()
