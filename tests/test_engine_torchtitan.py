"""torchtitan (0.3.0): grokmon reads ``TokenChoiceTopKRouter`` in a tiny CPU model, and the
``GrokkingMetricsProcessor`` probes through torchtitan's ``log`` hook.

The model is a 2-layer Qwen3-MoE built from torchtitan's own layer configs with
``ScaledDotProductAttention`` swapped in (its language models default to FlexAttention with
per-document masks; causal SDPA runs on a CPU). Every captured id and weight is checked against a
reference computed here from ``router.gate.weight`` and the router's input, by the rules of
torchtitan's router (score function, expert bias for the choice only, top-k, route norm).
The ``Trainer`` itself needs a GPU and is not run.

Run: ``pytest tests/test_engine_torchtitan.py`` (needs ``pip install grokmon[torchtitan]``).
"""

from __future__ import annotations

import importlib
import math
import sys
import types
import warnings

import pytest
import torch

from grokmon.config import MonitorConfig
from grokmon.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")

VOCAB, DIM, HEAD_DIM, EXPERTS, TOP_K, LAYERS = 64, 32, 8, 8, 2, 2


def _torchtitan():
    pytest.importorskip("torchtitan", reason="torchtitan is not installed: pip install grokmon[torchtitan]")
    try:
        from torchtitan.models import qwen3
        from torchtitan.models.common import CosSinRoPE, Embedding, Linear
        from torchtitan.models.common.attention import ScaledDotProductAttention
        from torchtitan.models.common.moe import TokenChoiceTopKRouter
    except ImportError as error:  # another layout than 0.3.0
        pytest.skip(f"torchtitan's 0.3.0 module layout is not there ({error}); grokmon supports torchtitan 0.3.0")
    return types.SimpleNamespace(qwen3=qwen3, CosSinRoPE=CosSinRoPE, Embedding=Embedding, Linear=Linear,
                                 SDPA=ScaledDotProductAttention, Router=TokenChoiceTopKRouter)


def tiny_titan(score_func: str = "softmax", route_norm: bool = True, route_scale: float = 1.0, seed: int = 0):
    """A 2-layer torchtitan Qwen3-MoE (8 experts, top-2), random init, causal SDPA, eval mode."""
    tt = _torchtitan()
    q = tt.qwen3
    layers = q._build_qwen3_moe_layers(
        n_layers=LAYERS, dim=DIM, n_heads=4, n_kv_heads=2, head_dim=HEAD_DIM, moe_hidden_dim=16,
        num_experts=EXPERTS, top_k=TOP_K, attn_backend="flex", moe_comm_backend="standard",
        rope=tt.CosSinRoPE.Config(dim=HEAD_DIM, max_seq_len=64, theta=10000.0))
    for layer in layers:
        layer.attention.inner_attention = tt.SDPA.Config()
        layer.moe.router.score_func = score_func
        layer.moe.router.route_norm = route_norm
        layer.moe.router.route_scale = route_scale
    config = q.Qwen3Model.Config(
        vocab_size=VOCAB, dim=DIM, norm=q._qwen3_norm(DIM),
        tok_embeddings=tt.Embedding.Config(num_embeddings=VOCAB, embedding_dim=DIM, param_init=q._EMBEDDING_INIT),
        lm_head=tt.Linear.Config(in_features=DIM, out_features=VOCAB, param_init=q._LINEAR_INIT),
        layers=layers)
    torch.manual_seed(seed)
    model = config.build()
    model.init_states()
    with torch.no_grad():  # a wider gate than std 0.02, so that the top-k choice is clear-cut
        for layer in model.layers.values():
            layer.moe.router.gate.weight.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(autouse=True)
def _quiet_cpu_autocast():
    # torchtitan's router computes the gate under autocast(float32), which a CPU ignores with a warning
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
        yield


def _router_inputs(model) -> tuple[dict[int, torch.Tensor], list]:
    """Forward pre-hooks recording each router's input ``x [B, L, D]`` (the test's own hooks)."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(model.layers.values()):
        handles.append(layer.moe.router.register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[0].detach().clone())))
    return seen, handles


def _reference(router, x: torch.Tensor, expert_bias: torch.Tensor | None):
    """torchtitan's routing rule, by hand: ids ``[B*L, k]`` and normalised weights, best first."""
    logits = x.float().reshape(-1, x.shape[-1]) @ router.gate.weight.float().T
    scores = torch.sigmoid(logits) if router.score_func == "sigmoid" else torch.softmax(logits, dim=-1)
    choice = scores if expert_bias is None else scores + expert_bias
    ids = torch.topk(choice, TOP_K, dim=-1).indices
    gates = scores.gather(-1, ids)  # the bias chooses, the unbiased scores weigh
    weights = gates / gates.sum(-1, keepdim=True)
    order = weights.argsort(dim=-1, descending=True)
    return ids.gather(-1, order), weights.gather(-1, order), choice


@pytest.mark.engine
@pytest.mark.parametrize("gating", ["softmax_route_norm", "sigmoid_biased"])
def test_capture_matches_hand_reference(gating):
    from grokmon.routing import capture_pathways, find_routers

    sigmoid = gating == "sigmoid_biased"
    model = tiny_titan(score_func="sigmoid" if sigmoid else "softmax", route_norm=not sigmoid,
                       route_scale=2.5 if sigmoid else 1.0)
    if sigmoid:  # a load-balancing bias that changes the choice of many tokens, never their weights
        for layer in model.layers.values():
            layer.moe.expert_bias_E.copy_(torch.linspace(-0.3, 0.3, EXPERTS))

    sites = find_routers(model)
    assert [(s.name, s.layer, s.num_experts) for s in sites] == [
        ("layers.0.moe.router", 0, EXPERTS), ("layers.1.moe.router", 1, EXPERTS)]
    assert all(s.router_weight() is not None and s.router_weight().data_ptr() ==
               model.layers[str(s.layer)].moe.router.gate.weight.data_ptr() for s in sites)

    batch, seq = 3, 10
    ids = torch.randint(0, VOCAB, (6, seq), generator=torch.Generator().manual_seed(1))
    seen, handles = _router_inputs(model)
    # keep_token_ids: per-token ids to compare; batch_size=3 -> two forwards, rows of both
    try:
        refs = {}
        with torch.no_grad():
            for b0 in (0, batch):
                model(ids[b0:b0 + batch])
                for layer, x in seen.items():
                    refs.setdefault(layer, []).append(x)
        result = capture_pathways(model, ids, batch_size=batch, keep_token_ids=True, compute_loss=True)
    finally:
        for h in handles:
            h.remove()

    p = result.pathways
    assert p.mean_weights.shape == (6, LAYERS, EXPERTS) and p.token_ids.shape == (6, seq, LAYERS, TOP_K)
    changed = 0
    for layer, block in enumerate(model.layers.values()):
        router = block.moe.router
        bias = block.moe.expert_bias_E if sigmoid else None
        x = torch.cat(refs[layer])  # [6, seq, D]
        ref_ids, ref_w, choice = _reference(router, x, bias)
        got_ids = p.token_ids[:, :, layer].reshape(-1, TOP_K).long()
        assert torch.equal(got_ids, ref_ids), f"layer {layer}: captured expert ids differ from the hand reference"
        dense = torch.zeros(ref_ids.shape[0], EXPERTS).scatter_(1, ref_ids, ref_w)
        ref_mean = dense.view(6, seq, EXPERTS).mean(dim=1)
        torch.testing.assert_close(p.mean_weights[:, layer], ref_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.mean_weights[:, layer].sum(-1), torch.ones(6))
        if sigmoid:  # the bias really moved choices: ids from unbiased scores would be wrong here
            unbiased = torch.topk(choice - bias, TOP_K, dim=-1).indices.sort(-1).values
            changed += int((unbiased != ref_ids.sort(-1).values).any(-1).sum())
    if sigmoid:
        assert changed > 0
    assert result.loss_per_sample is not None and torch.isfinite(result.loss_per_sample).all()
    # the probe's own loss, from the model's logits
    with torch.no_grad():
        logits = model(ids)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1),
                                           reduction="none").view(6, -1).mean(1)
    torch.testing.assert_close(result.loss_per_sample, ce, rtol=1e-4, atol=1e-5)


@pytest.mark.engine
def test_monitor_step_gives_metrics(tmp_path):
    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet

    model = tiny_titan(score_func="sigmoid", route_norm=False)
    ids = torch.randint(0, VOCAB, (8, 12), generator=torch.Generator().manual_seed(2))
    probe = ProbeSet.from_token_ids(ids, groups=["a", "b"] * 4)
    with pytest.warns(RuntimeWarning, match="pathway_consistency needs >= 3 MoE layers and this model has 2"):
        with GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path, on_error="raise",
                                                  stages=False)) as monitor:
            monitor.step(model, 1)
            monitor.flush()
    (step, metrics), = monitor.history
    assert step == 1
    for key in ("pathway_distance", "pathway_cosine", "routing_entropy", "probe_loss"):
        assert math.isfinite(metrics[f"grokmon/{key}"]), key
    assert "grokmon/pathway_consistency" not in metrics  # C_i of 2 MoE layers means nothing (~1e-8)
    assert monitor.errors == 0


class _FakeMemoryMonitor:
    """Stands in for torchtitan's DeviceMemoryMonitor, which queries a CUDA device (test-side shim)."""

    device_name = "cpu"

    def reset_peak_stats(self) -> None:
        pass

    def get_peak_stats(self):
        return types.SimpleNamespace(max_active_gib=0.0, max_active_pct=0.0, max_reserved_gib=0.0,
                                     max_reserved_pct=0.0, num_alloc_retries=0, num_ooms=0)


def _processor(monkeypatch, monitor, log_freq, **config):
    import torchtitan.components.metrics as titan_metrics
    from torchtitan.components.metrics import BaseLogger
    from torchtitan.distributed.parallel_dims import ParallelDims

    from grokmon.integrations.torchtitan import GrokkingMetricsProcessor

    monkeypatch.setattr(titan_metrics, "build_device_memory_monitor", _FakeMemoryMonitor)
    parallel_dims = ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=1, pp=1, ep=1, world_size=1)
    # the torchtitan way: the Trainer calls config.metrics.build(parallel_dims=..., ...)
    processor = GrokkingMetricsProcessor.Config(log_freq=log_freq, **config).build(
        parallel_dims=parallel_dims, **({"monitor": monitor} if monitor is not None else {}))

    class Recorder(BaseLogger):
        def __init__(self):
            self.calls = []

        def log(self, metrics, step):
            self.calls.append((step, dict(metrics)))

    processor.logger = Recorder()  # torchtitan's BaseLogger interface: TensorBoard / W&B loggers get the same calls
    processor.num_flops_per_token = 1
    return processor


@pytest.mark.engine
def test_metrics_processor_probes_on_schedule_and_logs_through_torchtitan(tmp_path, monkeypatch, caplog):
    _torchtitan()
    from grokmon import GrokkingMonitor, ProbeSet

    model = tiny_titan()
    probe = ProbeSet.from_token_ids(torch.randint(0, VOCAB, (6, 12), generator=torch.Generator().manual_seed(3)))
    probe.save(tmp_path / "probe.pt")
    processor = _processor(monkeypatch, None, 2, grokmon_probe=str(tmp_path / "probe.pt"), grokmon_every=4,
                           grokmon_output_dir=str(tmp_path / "gm"))
    assert isinstance(processor.monitor, GrokkingMonitor) and processor.monitor.config.every == 4
    processor.model_parts = [model]
    caplog.set_level("INFO")
    for step in (1, 2, 4, 6, 8):  # the steps torchtitan's Trainer logs at with log_freq=2
        processor.data_loading_times.append(0.01)  # what the Trainer records for each batch
        processor.ntokens_since_last_log += 100
        processor.log(step, 3.0, 3.5, 1.0)
    processor.close()

    calls = processor.logger.calls
    assert [s for s, m in calls if "loss_metrics/global_avg_loss" in m] == [1, 2, 4, 6, 8]  # torchtitan's own
    grok = [(s, m) for s, m in calls if "grokmon/probe_step" in m]
    assert sorted(m["grokmon/probe_step"] for _, m in grok) == [4, 8]
    assert all(s >= m["grokmon/probe_step"] for s, m in grok)  # never logged behind the probe's step
    assert all(math.isfinite(m["grokmon/pathway_distance"]) for _, m in grok)
    assert [step for step, _ in processor.monitor.history] == [4, 8]
    assert sum("grokmon probe of step" in r.getMessage() for r in caplog.records) == 2
    assert (tmp_path / "gm").exists()


@pytest.mark.engine
def test_metrics_processor_refuses_a_schedule_it_cannot_keep(tmp_path, monkeypatch):
    _torchtitan()
    from grokmon import GrokkingMonitor, ProbeSet

    probe = ProbeSet.from_token_ids(torch.randint(0, VOCAB, (4, 12)))
    monitor = GrokkingMonitor(probe, MonitorConfig(every=5, output_dir=tmp_path))
    try:
        with pytest.raises(ConfigError, match="multiple of log_freq"):
            _processor(monkeypatch, monitor, 10)
        with pytest.raises(ConfigError, match="grokmon_probe"):
            _processor(monkeypatch, None, 10)
    finally:
        monitor.close()


@pytest.mark.engine
def test_metrics_processor_warns_and_skips_under_pipeline_parallelism(tmp_path, monkeypatch):
    _torchtitan()
    from grokmon import GrokkingMonitor, ProbeSet

    monitor = GrokkingMonitor(ProbeSet.from_token_ids(torch.randint(0, VOCAB, (4, 12))),
                              MonitorConfig(every=2, output_dir=tmp_path))
    processor = _processor(monkeypatch, monitor, 2)
    processor.model_parts = [tiny_titan(), tiny_titan()]
    with pytest.warns(RuntimeWarning, match="pipeline parallelism"):
        assert processor.probe_step(2) == []
    processor.close()
    assert monitor.history == []


def test_missing_torchtitan_is_a_clear_config_error(monkeypatch):
    for name in [n for n in sys.modules if n == "torchtitan" or n.startswith("torchtitan.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "torchtitan", None)
    monkeypatch.delitem(sys.modules, "grokmon.integrations.torchtitan", raising=False)
    with pytest.raises(ConfigError, match=r"pip install grokmon\[torchtitan\]"):
        importlib.import_module("grokmon.integrations.torchtitan")
