"""Router readers for training engines outside transformers: torchtitan, Megatron-core, OLMo-core,
DeepSpeed.

Importing this package imports neither torch nor any engine: it only declares, by dotted class
path, which router classes grokmon reads and with which extractor
(:mod:`grokmon._router_table`). ``import grokmon`` imports it, so
:func:`grokmon.routing.find_routers` and :func:`grokmon.routing.capture_pathways` find these
routers in any model without a further import; the extractor module is imported the first time
such a router is met (the engine itself is, by then, already imported by the model).

* torchtitan 0.3.0: ``torchtitan.models.common.moe.TokenChoiceTopKRouter``, read by
  :func:`grokmon.engines.torchtitan.read_router`;
* megatron-core 0.16: ``megatron.core.transformer.moe.router.TopKRouter``, read by
  :func:`grokmon.engines.megatron.read_router`;
* ai2-olmo-core 3.0: ``olmo_core.nn.moe.router.MoERouter`` (``MoELinearRouter``), read by
  :func:`grokmon.engines.olmo_core.read_router`;
* deepspeed 0.19: native MoE's ``deepspeed.moe.sharded_moe.TopKGate``, read by
  :func:`grokmon.engines.deepspeed.read_topk_gate`, and AutoEP's
  ``deepspeed.moe.ep_router.TokenChoiceTopKRouter`` (the standard extractor). The state their
  layers keep for the training step (``MOELayer.l_aux`` / ``exp_counts``, AutoEP's
  ``tokens_per_expert``) is declared as probe state: every probe forward puts it back.

Subclasses match too (the class is looked up along the MRO). Another engine version whose router
lives elsewhere: ``grokmon.routing.register_router(ItsRouterClass, read_router)``.

Example:
    >>> import grokmon                                 # declares the engines' routers
    >>> from grokmon import _router_table
    >>> _router_table.lookup("megatron.core.transformer.moe.router.TopKRouter")
    ('grokmon.engines.megatron:read_router', 'mlp')
"""

from __future__ import annotations

from .._router_table import declare_probe_state, declare_router

TORCHTITAN_ROUTER = "torchtitan.models.common.moe.TokenChoiceTopKRouter"
MEGATRON_ROUTER = "megatron.core.transformer.moe.router.TopKRouter"
OLMO_CORE_ROUTER = "olmo_core.nn.moe.router.MoERouter"
DEEPSPEED_ROUTER = "deepspeed.moe.sharded_moe.TopKGate"
DEEPSPEED_AUTOEP_ROUTER = "deepspeed.moe.ep_router.TokenChoiceTopKRouter"

declare_router(TORCHTITAN_ROUTER, "grokmon.engines.torchtitan:read_router")
declare_router(MEGATRON_ROUTER, "grokmon.engines.megatron:read_router")
declare_router(OLMO_CORE_ROUTER, "grokmon.engines.olmo_core:read_router")
declare_router(DEEPSPEED_ROUTER, "grokmon.engines.deepspeed:read_topk_gate")
# (top_scores [T, k], selected_experts [T, k], counts [E]): the standard extractor reads it
declare_router(DEEPSPEED_AUTOEP_ROUTER, "grokmon.routing.extract:standard_extractor")
declare_probe_state("deepspeed.moe.sharded_moe.MOELayer", "l_aux", "exp_counts", "time_falltoall", "time_salltoall",
                    "time_moe")
declare_probe_state("deepspeed.moe.sharded_moe.TopKGate", "gate_time")
declare_probe_state("deepspeed.module_inject.auto_ep_layer.AutoEPMoELayer", "tokens_per_expert")

__all__ = ["DEEPSPEED_AUTOEP_ROUTER", "DEEPSPEED_ROUTER", "MEGATRON_ROUTER", "OLMO_CORE_ROUTER", "TORCHTITAN_ROUTER"]
