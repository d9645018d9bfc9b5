"""DeepSpeed's native MoE (``deepspeed.moe.layer.MoE``, gate ``TopKGate``): capture, dropped tokens,
state a probe must leave alone, and expert parallelism 2 over 2 gloo processes.

The capture is checked against the gate's decisions recomputed by hand from ``gate.wg.weight``
and the gate inputs recorded by a test-side hook (``ds_moe_model.reference_routes``). The
expert-parallel test runs this file as 2 rank processes (``python tests/test_deepspeed.py OUT``)
through ``deepspeed.initialize`` (ZeRO-1, ``ep_size=2``): each rank holds 2 of the 4 experts per
layer and the gates exchange tokens with all-to-all; the grokmon metrics must equal those of the
same model in 1 process without DeepSpeed's engine.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any, Callable

import pytest
import torch
from grokmon.config import MonitorConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child_env import child_env, exit_rank_process  # noqa: E402
from launch import assert_same_values, rank_results, run_ranks  # noqa: E402

N, SEQ = 8, 12  # even: both ranks probe 4 samples; batch_size=1 gives every forward the same tokens


def _ds():
    return pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: pip install 'grokmon[deepspeed]'")


def _probe_ids() -> torch.Tensor:
    """N x SEQ distinct tokens: the model has no positions, and equal tokens would tie at the gate,
    where top-k (k > 2) drops by gate value and torch.topk breaks ties its own way."""
    return torch.randperm(128, generator=torch.Generator().manual_seed(0))[:N * SEQ].view(N, SEQ)


def _no_shm_op() -> None:
    """Skip DeepSpeed's JIT C++ build of its CPU shared-memory all-reduce (about 2 minutes on 2 cores).

    That op serves only ``inference_all_reduce``; training and the probe use gloo either way.
    """
    import importlib

    # import_module, not `import deepspeed.comm.torch as m`: that binds deepspeed.comm's attribute
    # `torch`, which is the torch package itself
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


# ---------------------------------------------------------------------------------------- capture
@pytest.mark.engine
@pytest.mark.parametrize("k, factor", [(1, 4.0), (2, 0.5), (3, 0.5)])
def test_capture_matches_gate_by_hand(k: int, factor: float) -> None:
    _ds()
    from ds_moe_model import LAYERS, TinyDSMoE, record_gate_inputs, reference_pathways

    from grokmon.routing import capture_pathways, find_routers

    model = TinyDSMoE(k=k, eval_capacity_factor=factor)
    sites = find_routers(model)
    assert [s.name for s in sites] == [f"layers.{i}.moe.deepspeed_moe.gate" for i in range(LAYERS)]
    inputs, handles = record_gate_inputs(model)
    try:
        result = capture_pathways(model, _probe_ids(), batch_size=3, keep_token_ids=True)
    finally:
        for h in handles:
            h.remove()
    weights = [g.wg.weight.detach() for g in model.gates()]
    mean, counts, routes = reference_pathways(inputs, weights, SEQ, k, factor)
    p = result.pathways
    dropped = sum(k - len(r) for layer in routes for r in layer)
    if k > 1:
        assert dropped > 0, "the capacity was meant to drop routes"
    assert torch.allclose(p.mean_weights.double(), mean, atol=1e-5), (p.mean_weights, mean)
    assert torch.equal(p.expert_counts, counts)
    assert int(counts.sum()) == LAYERS * N * SEQ * k - dropped
    for l in range(LAYERS):  # per token: the kept experts by weight, then -1 for each dropped route
        for t, token in enumerate(routes[l]):
            expected = [e for e, _ in sorted(token, key=lambda r: -r[1])] + [-1] * (k - len(token))
            assert p.token_ids[t // SEQ, t % SEQ, l].tolist() == expected, (l, t)
    assert torch.equal(p.router_weights, torch.stack(weights))  # the expert embeddings of consistency
    assert result.loss_per_sample is not None and torch.isfinite(result.loss_per_sample).all()


@pytest.mark.engine
def test_sparse_and_dense_gate_outputs_read_alike() -> None:
    """The gate's two output forms (``sparse_routes=True`` from MOELayer, the dense one otherwise)."""
    _ds()
    from ds_moe_model import TinyDSMoE

    from grokmon.engines.deepspeed import read_topk_gate

    for k in (1, 2, 3):
        gate = TinyDSMoE(k=k, eval_capacity_factor=0.5 if k > 1 else 4.0).gates()[0].eval()
        x = torch.randn(24, 16, generator=torch.Generator().manual_seed(k))
        sparse = read_topk_gate(gate, (x,), gate(x, None, True))
        dense = read_topk_gate(gate, (x,), gate(x))
        assert torch.equal(sparse.routed, dense.routed), k
        assert torch.equal(sparse.expert_ids, dense.expert_ids), k
        assert torch.allclose(sparse.weights, dense.weights, atol=1e-6), k


@pytest.mark.engine
def test_every_route_of_a_token_dropped_weighs_nothing() -> None:
    """A token with all routes dropped reached no expert: weight 0, no load, no NaN."""
    _ds()
    from grokmon.engines.deepspeed import read_topk_gate

    out = (torch.tensor(0.0), 1, 4, torch.tensor([[-1, 2]], dtype=torch.int32), torch.zeros(1, 2, dtype=torch.int32),
           torch.tensor([[0.0, 0.3]]), torch.zeros(4))
    r = read_topk_gate(None, (), out)  # k = 1, two tokens: the first dropped
    assert r.expert_ids.tolist() == [[0], [2]] and r.weights.tolist() == [[0.0], [1.0]]
    assert r.routed.tolist() == [[False], [True]]


@pytest.mark.engine
def test_autoep_router_is_captured() -> None:
    """AutoEP's ``TokenChoiceTopKRouter`` (what AutoEP puts in a Hugging Face MoE block), by hand.

    AutoEP's own layer replacement does not run here: DeepSpeed 0.19.8 fails on transformers 5.x
    (``_CanRecordRegistry.get() takes 2 positional arguments but 3 were given``), so the router runs
    inside a small model of the test's own.
    """
    _ds()
    from deepspeed.moe.ep_router import TokenChoiceTopKRouter
    from torch import nn

    from grokmon.routing import capture_pathways, find_routers

    class RouterStack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.embed = nn.Embedding(128, 16)
            self.layers = nn.ModuleList(
                TokenChoiceTopKRouter(16, 8, None, None, top_k=2, score_func=func, route_norm=False,
                                      route_scale=2.5, gate_bias=False) for func in ("softmax", "sigmoid"))

        def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            x = self.embed(input_ids).view(-1, 16)
            for router in self.layers:
                scores, _ids, _counts = router(x)
                x = x + scores.sum(-1, keepdim=True)
            return x

    model = RouterStack()
    assert [s.name for s in find_routers(model)] == ["layers.0", "layers.1"]
    ids = _probe_ids()
    result = capture_pathways(model, ids, keep_token_ids=True, compute_loss=False)
    x = model.embed(ids).view(-1, 16).detach().double()
    for l, (router, func) in enumerate(zip(model.layers, ("softmax", "sigmoid"))):
        logits = x @ router.gate.weight.detach().double().T
        scores = torch.softmax(logits, -1) if func == "softmax" else torch.sigmoid(logits)
        top = scores.topk(2, dim=-1)
        mean = torch.zeros(N, 8, dtype=torch.float64).index_add_(
            0, torch.arange(N * SEQ) // SEQ, torch.zeros(N * SEQ, 8, dtype=torch.float64).scatter(
                1, top.indices, top.values / top.values.sum(-1, keepdim=True))) / SEQ
        assert torch.allclose(result.pathways.mean_weights[:, l].double(), mean, atol=1e-5), l
        assert result.pathways.token_ids[:, :, l].reshape(-1, 2).tolist() == top.indices.tolist(), l
        x = x + (top.values * 2.5).sum(-1, keepdim=True)


def test_grokmon_imports_without_deepspeed() -> None:
    code = ("import sys, grokmon, grokmon.routing; from grokmon.routing import find_routers; "
            "assert 'deepspeed' not in sys.modules, 'grokmon imported deepspeed'")
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------- training state
def _train_step(model, ids, probe=None):
    """forward, (probe), read the layers' l_aux / exp_counts, backward: what a training loop does."""
    model.train()
    logits = model(ids)
    if probe is not None:
        probe(model)
    moes = [b.moe.deepspeed_moe for b in model.layers]
    aux = sum(m.l_aux for m in moes)
    counts = [m.exp_counts.clone() for m in moes]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    (loss + 0.1 * aux).backward()
    return float(loss.detach()), float(aux.detach()), counts, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.engine
def test_probe_between_forward_and_backward_changes_nothing(tmp_path) -> None:
    _ds()
    from ds_moe_model import TinyDSMoE

    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet

    model = TinyDSMoE(k=2, eval_capacity_factor=0.5)
    twin = copy.deepcopy(model)
    ids = torch.randint(0, 128, (4, SEQ), generator=torch.Generator().manual_seed(5))

    # the probe's own forward does overwrite the layer's l_aux and exp_counts: the guard is needed
    model.train()
    model(ids)
    layer = model.layers[0].moe.deepspeed_moe
    before = (layer.l_aux, layer.exp_counts)
    with torch.no_grad():
        model.eval()
        model(_probe_ids())
    assert layer.l_aux is not before[0] and not torch.equal(layer.exp_counts, before[1])

    monitor = GrokkingMonitor(ProbeSet.from_token_ids(_probe_ids()),
                              MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, on_error="raise"))
    expected = _train_step(twin, ids)
    got = _train_step(model, ids, probe=lambda m: monitor.probe_now(m, 1))
    monitor.close()
    assert monitor.history and "grokmon/pathway_distance" in monitor.history[-1][1]
    assert got[:2] == expected[:2]  # loss and l_aux, exactly
    assert all(torch.equal(a, b) for a, b in zip(got[2], expected[2]))
    assert got[3].keys() == expected[3].keys()
    for name, grad in expected[3].items():
        assert torch.equal(got[3][name], grad), name
    assert model.training  # the probe put the training mode back


# ------------------------------------------------------------------------- expert parallelism 2
def _rank_main(out_path: str, distributed: bool) -> dict:
    import deepspeed
    import torch.distributed as dist
    from ds_moe_model import LAYERS, TinyDSMoE, record_gate_inputs, reference_pathways

    from grokmon import GrokkingMonitor, ProbeSet

    rank, ep = 0, 1
    if distributed:
        _no_shm_op()
        deepspeed.init_distributed(dist_backend="gloo")
        rank, ep = dist.get_rank(), dist.get_world_size()

    def engine_of(model: torch.nn.Module) -> Any:
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

        params = split_params_into_different_moe_groups_for_optimizer(
            [{"params": list(model.parameters()), "name": "all"}])
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(params, lr=0.5), config={
            "train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 1},
            "zero_allow_untested_optimizer": True})
        return engine

    model = TinyDSMoE(k=2, eval_capacity_factor=0.5, ep_size=ep, ep_rank=rank)
    target: torch.nn.Module = engine_of(model) if distributed else model
    groups = ["a" if i % 3 else "b" for i in range(N)]
    monitor = GrokkingMonitor(ProbeSet.from_token_ids(_probe_ids(), groups=groups),
                              MonitorConfig(every=1, output_dir=f"{out_path}_rank{rank}", async_metrics=False, on_error="raise", batch_size=1, keep_token_ids=True))
    inputs, handles = record_gate_inputs(model)
    monitor.step(target, 1)
    for h in handles:
        h.remove()
    monitor.close()
    values = {k: v for k, v in monitor.history[-1][1].items() if not k.endswith("_seconds")}
    local_experts = len(model.layers[0].moe.deepspeed_moe.experts.deepspeed_experts)
    result = {"values": values, "local_experts": local_experts, "engine": type(target).__name__}
    # this rank's captured samples against the gate by hand (rank r probes samples r, r + 2, ...)
    weights = [g.wg.weight.detach() for g in model.gates()]
    mean, counts, _ = reference_pathways(inputs, weights, SEQ, 2, 0.5)
    state = monitor.pathways_state()
    mine = list(range(rank, N, ep))
    result["matches_hand"] = bool(torch.allclose(state["mean_weights"][mine].double(), mean, atol=1e-5))
    result["dropped"] = int(LAYERS * len(mine) * SEQ * 2 - counts.sum())
    result["expert_counts"] = state["expert_counts"].tolist()
    result["hand_counts"] = counts.tolist()
    if distributed:  # a probe through the engine between forward and backward changes no update
        twin = engine_of(TinyDSMoE(k=2, eval_capacity_factor=0.5, ep_size=ep, ep_rank=rank))
        checker = GrokkingMonitor(ProbeSet.from_token_ids(_probe_ids()),
                                  MonitorConfig(every=1, async_metrics=False, output_dir=f"{out_path}_check{rank}", on_error="raise", batch_size=1))
        ids = torch.randint(0, 128, (2, SEQ), generator=torch.Generator().manual_seed(10 + rank))
        plain = _engine_step(target, ids)
        probed = _engine_step(twin, ids, probe=lambda e: checker.probe_now(e, 1))
        checker.close()
        result["probe_in_step_changes_nothing"] = plain[0] == probed[0] and all(
            torch.equal(a, b) for a, b in zip(plain[1], probed[1]))
        result["step_moved_weights"] = not all(
            torch.equal(a, b) for a, b in zip(plain[1], (p.detach() for p in TinyDSMoE(
                k=2, eval_capacity_factor=0.5, ep_size=ep, ep_rank=rank).parameters())))
    with open(f"{out_path}.{rank}", "w") as handle:
        json.dump(result, handle)
    return result


def _engine_step(engine: Any, ids: torch.Tensor, probe: Callable[[Any], Any] | None = None) -> tuple[float, list]:
    """One DeepSpeed training step whose loss reads the layers' l_aux after an optional probe."""
    engine.train()
    logits = engine(ids)
    if probe is not None:
        probe(engine)
    aux = sum(block.moe.deepspeed_moe.l_aux for block in engine.module.layers)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    engine.backward(loss + 0.1 * aux)
    engine.step()
    return float(loss.detach()), [p.detach().clone() for p in engine.module.parameters()]


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_expert_parallel_2_ranks_equal_one_process(tmp_path) -> None:
    _ds()

    def reference() -> dict:
        with torch.random.fork_rng():
            return _rank_main(str(tmp_path / "single"), distributed=False)

    single = run_ranks([__file__, tmp_path / "ep"], 2, meanwhile=reference)
    ranks = rank_results(tmp_path / "ep", 2)
    expected = single["values"]
    assert single["local_experts"] == 4 and single["matches_hand"], single
    assert single["dropped"] > 0  # the capacity limit dropped routes in the probe
    assert single["expert_counts"] == single["hand_counts"]
    assert expected["grokmon/pathway_distance"] > 0
    for rank, result in enumerate(ranks):
        assert result["engine"] == "DeepSpeedEngine" and result["local_experts"] == 2, result
        assert result["matches_hand"], rank  # each rank's own samples, by hand
        assert result["expert_counts"] == single["expert_counts"], rank  # summed over the ranks
        assert result["probe_in_step_changes_nothing"] and result["step_moved_weights"], rank
        assert_same_values(result["values"], expected, tol=1e-5, where=rank)


if __name__ == "__main__":
    _rank_main(sys.argv[1], distributed=True)
    exit_rank_process()
