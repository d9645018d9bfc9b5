"""The error catalogue's cases: training engines (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn

from grokmon.errors import ConfigError, RoutingError

from catalogue.inputs import RouterModel, monitor
from catalogue.registry import case

# The engine readers are called on hand-made outputs, torchtitan's MetricsProcessor is a stand-in
# module and Megatron's model chunks are plain modules: no case needs an engine installed.



def titan_integration(mp: pytest.MonkeyPatch) -> Any:
    """grokmon.integrations.torchtitan imported over a stand-in torchtitan.components.metrics (undone by ``mp``)."""
    import dataclasses
    import importlib
    import types

    import grokmon.integrations

    @dataclasses.dataclass(kw_only=True, slots=True)
    class Config:  # torchtitan's MetricsProcessor.Config, the one field grokmon reads
        log_freq: int = 10

    class MetricsProcessor:
        def __init__(self, config: Any, **kwargs: Any) -> None:
            self.config, self.model_parts = config, None

        def log(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

    MetricsProcessor.Config = Config  # type: ignore[attr-defined]
    metrics = types.ModuleType("torchtitan.components.metrics")
    metrics.MetricsProcessor = MetricsProcessor  # type: ignore[attr-defined]
    for name in ("torchtitan", "torchtitan.components"):
        mp.setitem(sys.modules, name, types.ModuleType(name))
    mp.setitem(sys.modules, "torchtitan.components.metrics", metrics)
    mp.setitem(sys.modules, "grokmon.integrations.torchtitan", None)  # undo restores the real one (or none)
    del sys.modules["grokmon.integrations.torchtitan"]
    mp.setattr(grokmon.integrations, "torchtitan", None, raising=False)
    return importlib.import_module("grokmon.integrations.torchtitan")


@case("engine-torchtitan-router-output", RoutingError, "torchtitan TokenChoiceTopKRouter: expected (topk_scores [B, L, "
      "k], topk_expert_ids [B, L, k], scores [B, L, E]) as in torchtitan 0.3.0, got tuple of 2: for another torchtitan "
      "version register a reader with grokmon.routing.register_router(TokenChoiceTopKRouter, fn)")
def _(tmp, mp):
    from grokmon.engines.torchtitan import read_router

    scores = torch.rand(1, 2, 4)
    read_router(None, (), (scores, scores.topk(2).indices))


@case("engine-torchtitan-router-shapes", RoutingError, "torchtitan TokenChoiceTopKRouter: expected integer ids and "
      "scores of one shape [B, L, k] and scores [B, L, E], got ids torch.float32 ...: for another torchtitan version "
      "register a reader")
def _(tmp, mp):
    from grokmon.engines.torchtitan import read_router

    scores = torch.rand(1, 2, 4)
    top = scores.topk(2)
    read_router(None, (), (top.values, top.indices.float(), scores))


@case("engine-megatron-router-output", RoutingError, "Megatron TopKRouter: expected (probs [tokens, E], routing_map "
      "[tokens, E]) as in megatron-core 0.16, got Tensor: for another version register a reader with "
      "grokmon.routing.register_router(TopKRouter, fn)")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    read_router(None, (torch.zeros(2, 1, 4),), torch.rand(2, 3), top_k=2)


@case("engine-megatron-router-shapes", RoutingError, "Megatron TopKRouter: expected float probs and a bool routing_map "
      "of one [tokens, E] shape, got torch.float32 (2, 3) and torch.float32 (2, 3): for another version register")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    read_router(None, (torch.zeros(2, 1, 4),), (probs, (probs > 0).float()), top_k=2)


@case("engine-megatron-router-input", RoutingError, "Megatron TopKRouter: its input must be hidden_states [seq, batch, "
      "hidden] with seq * batch = 2 token rows, got (2, 4): grokmon needs seq and batch")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    read_router(None, (torch.zeros(2, 4),), (probs, probs > 0), top_k=2)


@case("engine-megatron-top-k", RoutingError, "Megatron TopKRouter: top-k must be in [1, 3], got None (the router's "
      ".topk, from moe_router_topk): set moe_router_topk to the experts per token, or pass read_router(..., top_k=k)")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    read_router(nn.Linear(4, 3), (torch.zeros(2, 1, 4),), (probs, probs > 0))  # a module without .topk


@case("engine-declare-router-class-path", ConfigError, "declare_router: class_path must be the router's dotted path "
      "'package.module.Class', got 'Gate'")
def _(tmp, mp):
    from grokmon._router_table import declare_router

    declare_router("Gate", "mypkg.support:read_gate")


@case("engine-declare-router-extractor-path", ConfigError, "declare_router: extractor_path must be 'module:function' "
      "(one colon), got 'mypkg.support.read_gate'")
def _(tmp, mp):
    from grokmon._router_table import declare_router

    declare_router("mypkg.moe.Gate", "mypkg.support.read_gate")


@case("engine-declare-router-kind", ConfigError, "declare_router: kind must be 'mlp' or 'attention', got 'ffn'")
def _(tmp, mp):
    from grokmon._router_table import declare_router

    declare_router("mypkg.moe.Gate", "mypkg.support:read_gate", kind="ffn")


@case("engine-declare-probe-state-class-path", ConfigError, "declare_probe_state: class_path must be "
      "'package.module.Class', got 'MOELayer'")
def _(tmp, mp):
    from grokmon._router_table import declare_probe_state

    declare_probe_state("MOELayer", "l_aux")


@case("engine-declare-probe-state-no-attributes", ConfigError, "declare_probe_state: give one or more attribute "
      "names, got ()")
def _(tmp, mp):
    from grokmon._router_table import declare_probe_state

    declare_probe_state("deepspeed.moe.sharded_moe.MOELayer")


def needs_olmo_core() -> None:
    try:
        import olmo_core.train.callbacks  # noqa: F401
    except ImportError:
        pytest.skip("needs OLMo-core: pip install grokmon[olmo-core]")


@case("engine-olmo-core-missing", ConfigError, "GrokkingOLMoCoreCallback needs OLMo-core: pip install "
      "grokmon[olmo-core] (or pip install ai2-olmo-core)")
def _(tmp, mp):
    import importlib

    mp.delitem(sys.modules, "grokmon.integrations.olmo_core", raising=False)  # put back after the case
    mp.setitem(sys.modules, "olmo_core.train.callbacks", None)  # the import fails as if not installed
    importlib.import_module("grokmon.integrations.olmo_core")


@case("engine-olmo-core-not-a-monitor", ConfigError, "GrokkingOLMoCoreCallback needs a GrokkingMonitor, got object: "
      "pass GrokkingOLMoCoreCallback(monitor)")
def _(tmp, mp):
    needs_olmo_core()
    from grokmon.integrations import GrokkingOLMoCoreCallback

    GrokkingOLMoCoreCallback(object())


@case("engine-olmo-core-config-no-probe", ConfigError, "GrokkingOLMoCoreCallbackConfig needs probe= the path of a "
      "saved probe (ProbeSet.save or grokmon probe)")
def _(tmp, mp):
    needs_olmo_core()
    from grokmon.integrations import GrokkingOLMoCoreCallbackConfig

    GrokkingOLMoCoreCallbackConfig().build(None)


@case("engine-olmo-core-probe-too-long", ConfigError, "the probe's sequences have 8 tokens, more than the 4 tokens the "
      "model's MoE layers accept per forward (its training micro-batch, rank_microbatch_size): build the probe with "
      "seq_len <= 4")
def _(tmp, mp):
    import types

    needs_olmo_core()
    from grokmon.integrations import GrokkingOLMoCoreCallback

    experts = nn.Module()
    experts.max_local_microbatch_size = 4   # what OLMo-core's capacity-based experts were sized for
    model = nn.Sequential(experts)
    callback = GrokkingOLMoCoreCallback(monitor())
    callback.trainer = types.SimpleNamespace(train_module=types.SimpleNamespace(model=model), global_step=0)
    try:
        callback._fit_probe_batch()
    finally:
        callback.monitor.close()


@case("engine-olmo-core-router-output", RoutingError, "OLMo-core router Module returned Tensor, not (expert_weights, "
      "expert_indices, batch_size_per_expert, aux_loss): this OLMo-core version changed its router contract; register "
      "a reader with grokmon.routing.register_router")
def _(tmp, mp):
    from grokmon.engines.olmo_core import read_router

    read_router(nn.Module(), (), torch.zeros(4, 2))


@case("engine-torchtitan-missing", ConfigError, "grokmon.integrations.torchtitan needs torchtitan (tested with 0.3.0), "
      "which is not importable (...): pip install grokmon[torchtitan]")
def _(tmp, mp):
    import importlib

    for name in [n for n in sys.modules if n == "torchtitan" or n.startswith("torchtitan.")]:
        mp.setitem(sys.modules, name, None)  # a None entry makes the import fail
    mp.setitem(sys.modules, "torchtitan", None)
    mp.delitem(sys.modules, "grokmon.integrations.torchtitan", raising=False)
    importlib.import_module("grokmon.integrations.torchtitan")


@case("engine-torchtitan-not-a-monitor", ConfigError, "GrokkingMetricsProcessor needs a GrokkingMonitor, got str: pass "
      "monitor=GrokkingMonitor(probe, MonitorConfig(every=...)), or leave monitor out and set Config(grokmon_probe='probe.pt')")
def _(tmp, mp):
    titan = titan_integration(mp)
    titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=10), monitor="monitor")


@case("engine-torchtitan-log-freq", ConfigError, "grokmon probes every 5 steps but torchtitan calls the metrics "
      "processor only every log_freq=10 steps: make every a multiple of log_freq (e.g. 10)")
def _(tmp, mp):
    titan = titan_integration(mp)
    with monitor(every=5) as m:
        titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=10), monitor=m)


@case("engine-torchtitan-no-probe", ConfigError, "GrokkingMetricsProcessor needs a probe: set "
      "Config(grokmon_probe='probe.pt') (a ProbeSet saved with probe.save(path)) or pass monitor=GrokkingMonitor(...)")
def _(tmp, mp):
    titan = titan_integration(mp)
    titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=10))


@case("engine-torchtitan-no-model-parts", RuntimeWarning, "grokmon: not probing: model_parts is not set (the "
      "torchtitan Trainer sets it after building the model): outside the Trainer, set processor.model_parts = [model]")
def _(tmp, mp):
    titan = titan_integration(mp)
    processor = titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=2),
                                               monitor=monitor(every=2))
    try:
        assert processor.probe_step(2) == []
    finally:
        processor.close()


@case("engine-torchtitan-pipeline-parallel", RuntimeWarning, "grokmon: not probing: there are 2 model parts (pipeline "
      "parallelism: each stage holds only its own routers); grokmon probes a model in one part: train without "
      "pipeline parallelism to probe")
def _(tmp, mp):
    titan = titan_integration(mp)
    processor = titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=2),
                                               monitor=monitor(every=2))
    processor.model_parts = [RouterModel(), RouterModel()]  # two pipeline stages
    try:
        assert processor.probe_step(2) == []
    finally:
        processor.close()


@case("engine-megatron-probe-model-not-module", ConfigError, "MegatronProbeModel needs the Megatron model chunk (an "
      "nn.Module), got list: pass one chunk, e.g. MegatronProbeModel(model[0])")
def _(tmp, mp):
    from grokmon.integrations.megatron import MegatronProbeModel  # imports no Megatron

    MegatronProbeModel([RouterModel()])  # the list of chunks get_model returns


@case("engine-megatron-bridge-not-a-monitor", ConfigError, "GrokkingBridgeCallback needs a GrokkingMonitor, got str: "
      "pass GrokkingBridgeCallback(monitor)")
def _(tmp, mp):
    from grokmon.integrations.megatron import GrokkingBridgeCallback

    GrokkingBridgeCallback("monitor")


@case("engine-megatron-bridge-pipeline-parallel", RuntimeWarning, "grokmon: not probing: 2 model chunks (pipeline "
      "parallelism: each holds only its own layers' routers); grokmon probes a model in one chunk: train without "
      "pipeline parallelism to probe")
def _(tmp, mp):
    import types

    from grokmon.integrations.megatron import GrokkingBridgeCallback

    callback = GrokkingBridgeCallback(monitor(every=1))
    # shaped like Bridge's callback context: two pipeline chunks
    context = types.SimpleNamespace(model=[RouterModel(), RouterModel()],
                                    state=types.SimpleNamespace(train_state=types.SimpleNamespace(step=0)))
    try:
        callback.on_train_step_end(context)
    finally:
        callback.on_train_end(context)
    assert callback.monitor.history == []
