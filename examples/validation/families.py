"""Tiny random-init MoE models of five transformers families for the validation matrix.

Every MoE layer is sparse (no dense first layers), 8 experts, top-2, hidden size 64.

Example:
    >>> m = make_model("deepseek_v3", layers=2, vocab=53, seed=0)
    >>> sum(1 for n, _ in m.named_modules() if n.endswith("mlp.gate"))
    2
"""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf

FAMILIES = ("olmoe", "mixtral", "qwen3_moe", "deepseek_v3", "granitemoe")


def make_model(family: str, layers: int, vocab: int, seed: int, experts: int = 8, top_k: int = 2,
               hidden: int = 64, expert_size: int = 64) -> torch.nn.Module:
    """A ``*ForCausalLM`` of ``family`` with ``layers`` MoE layers (all sparse)."""
    common: dict[str, Any] = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=expert_size, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8, pad_token_id=None,
        bos_token_id=None, eos_token_id=None, tie_word_embeddings=False, use_cache=False,
        num_experts_per_tok=top_k,
    )
    torch.manual_seed(seed)
    if family == "olmoe":
        return tf.OlmoeForCausalLM(tf.OlmoeConfig(**common, num_experts=experts, norm_topk_prob=False))
    if family == "mixtral":
        return tf.MixtralForCausalLM(tf.MixtralConfig(**common, num_local_experts=experts))
    if family == "qwen3_moe":
        return tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(**common, num_experts=experts, moe_intermediate_size=expert_size,
                                                        head_dim=hidden // 4, decoder_sparse_step=1, mlp_only_layers=[]))
    if family == "granitemoe":
        return tf.GraniteMoeForCausalLM(tf.GraniteMoeConfig(**common, num_local_experts=experts))
    if family == "deepseek_v3":
        # sigmoid router with a selection bias and one shared expert (DeepSeek-V3's design)
        ds = {k: v for k, v in common.items() if k != "num_key_value_heads"}
        return tf.DeepseekV3ForCausalLM(tf.DeepseekV3Config(
            **ds, n_routed_experts=experts, moe_intermediate_size=expert_size, n_shared_experts=1,
            first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=16, head_dim=8, n_group=1, topk_group=1))
    raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")
