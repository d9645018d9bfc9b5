"""Tiny random-init models of the 12 supported MoE families (no downloads), and random probes for them.

For tests and benchmarks; tests/conftest.py turns them into fixtures. Configs follow
../shared/docs/integration-facts.md §1.7.

Example:
    >>> model = tiny_model("olmoe")          # doctest: +SKIP
    >>> probe = random_probe(8, seed=0)      # doctest: +SKIP
"""

from __future__ import annotations

import torch
import transformers as tf

FAMILIES = (
    "olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3",
    "gpt_oss", "granitemoe", "jetmoe", "phimoe", "dbrx", "llama4_text",
)


def _config(family: str, num_layers: int, num_experts: int, top_k: int, vocab_size: int):
    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=None, num_experts_per_tok=top_k,
    )
    if family == "olmoe":
        return tf.OlmoeConfig(**common, num_experts=num_experts), tf.OlmoeForCausalLM
    if family == "mixtral":
        return tf.MixtralConfig(**common, num_local_experts=num_experts), tf.MixtralForCausalLM
    if family == "qwen2_moe":
        return tf.Qwen2MoeConfig(**common, num_experts=num_experts, moe_intermediate_size=16,
                                 shared_expert_intermediate_size=32), tf.Qwen2MoeForCausalLM
    if family == "qwen3_moe":
        return tf.Qwen3MoeConfig(**common, num_experts=num_experts, moe_intermediate_size=16,
                                 head_dim=8), tf.Qwen3MoeForCausalLM
    if family in ("deepseek_v2", "deepseek_v3"):
        ds = {k: v for k, v in common.items() if k != "num_key_value_heads"}
        ds.update(n_routed_experts=num_experts, moe_intermediate_size=16, n_shared_experts=1,
                  first_k_dense_replace=1, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                  v_head_dim=8, head_dim=8)
        if family == "deepseek_v2":
            return tf.DeepseekV2Config(**ds, q_lora_rank=None, topk_method="greedy"), tf.DeepseekV2ForCausalLM
        return tf.DeepseekV3Config(**ds, q_lora_rank=16, n_group=2, topk_group=1), tf.DeepseekV3ForCausalLM
    if family == "gpt_oss":
        types = ["sliding_attention", "full_attention"] * ((num_layers + 1) // 2)
        return tf.GptOssConfig(**common, num_local_experts=num_experts, head_dim=8,
                               layer_types=types[:num_layers], sliding_window=8), tf.GptOssForCausalLM
    if family == "granitemoe":
        return tf.GraniteMoeConfig(**common, num_local_experts=num_experts), tf.GraniteMoeForCausalLM
    if family == "jetmoe":
        jet = {k: v for k, v in common.items() if k not in ("num_attention_heads", "intermediate_size")}
        return tf.JetMoeConfig(**jet, num_local_experts=num_experts, kv_channels=8,
                               intermediate_size=64), tf.JetMoeForCausalLM
    if family == "phimoe":
        return tf.PhimoeConfig(**common, num_local_experts=num_experts), tf.PhimoeForCausalLM
    if family == "dbrx":
        return tf.DbrxConfig(
            d_model=32, n_heads=4, n_layers=num_layers, max_seq_len=64, vocab_size=vocab_size,
            pad_token_id=0, eos_token_id=1, bos_token_id=None,
            attn_config={"kv_n_heads": 2, "rope_theta": 1e4, "clip_qkv": 8.0},
            ffn_config={"ffn_hidden_size": 64, "moe_num_experts": num_experts, "moe_top_k": top_k},
        ), tf.DbrxForCausalLM
    if family == "llama4_text":
        return tf.Llama4TextConfig(**{**common, "num_experts_per_tok": 1}, num_local_experts=num_experts,
                                   intermediate_size_mlp=64, head_dim=8,
                                   interleave_moe_layer_step=1), tf.Llama4ForCausalLM
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def tiny_model(family: str = "olmoe", seed: int = 0, num_layers: int = 2, num_experts: int = 8,
               top_k: int = 2, vocab_size: int = 128) -> torch.nn.Module:
    """A random-init ``*ForCausalLM`` of ``family`` with ``num_layers`` layers, in eval mode."""
    config, cls = _config(family, num_layers, num_experts, top_k, vocab_size)
    torch.manual_seed(seed)
    model = cls(config)
    if family == "deepseek_v3":
        # a non-zero selection bias, so bias-corrected selection differs from top-k of the logits
        g = torch.Generator().manual_seed(seed + 1)
        for module in model.modules():
            if hasattr(module, "e_score_correction_bias"):
                module.e_score_correction_bias.copy_(torch.randn(module.e_score_correction_bias.shape, generator=g))
    return model.eval()


def random_probe(n: int = 8, seed: int = 0, seq_len: int = 12, *, vocab_size: int = 128,
                 groups: str | None = "halves", min_length: int = 8):
    """A seeded ``ProbeSet`` of ``n`` random samples of ``seq_len`` ids in ``[2, vocab_size)``.

    ``groups``: ``"halves"`` (the first half ``a``, the rest ``b``), ``"alternate"`` (``a, b, a, ...``)
    or None.
    """
    from grokmon import ProbeSet

    ids = torch.randint(2, vocab_size, (n, seq_len), generator=torch.Generator().manual_seed(seed))
    labels = {"halves": ["a"] * (n // 2) + ["b"] * (n - n // 2), "alternate": ["ab"[i % 2] for i in range(n)],
              None: None}[groups]
    return ProbeSet.from_token_ids(ids, groups=labels, min_length=min_length)


def build_monitor(probe, *, sinks=(), alerts=(), stage_tracker=None, accelerator=None, on_alert=None, **fields):
    """``GrokkingMonitor(probe, MonitorConfig(**fields), sinks=..., ...)``: test helpers take config fields.

    Example:
        >>> monitor = build_monitor(random_probe(), every=1, jsonl=False)   # doctest: +SKIP
    """
    from grokmon import GrokkingMonitor, MonitorConfig

    return GrokkingMonitor(probe, MonitorConfig(**fields), sinks=sinks, alerts=alerts, stage_tracker=stage_tracker,
                           accelerator=accelerator, on_alert=on_alert)
