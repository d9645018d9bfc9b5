"""The public API: about 25 names in grouped order, no aliases or shims, one adapter prefix, plain classes."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from optional import need

import grokmon
import grokmon.integrations as integrations


def test_top_level_names_are_few_grouped_and_each_one_thing() -> None:
    names = [n for n in grokmon.__all__ if n != "__version__"]
    if "GrokkingLightningCallback" in names:
        need("lightning")  # getattr below imports every top-level name
    assert 20 <= len(names) <= 26
    assert names[:2] == ["GrokkingMonitor", "MonitorConfig"]  # grouped by job, the monitor first
    assert names != sorted(names)
    objects = [getattr(grokmon, n) for n in names]
    assert len({id(o) for o in objects}) == len(objects)  # no alias: one name per thing
    for removed in ("GrokkingCallback", "GrokmonLightningCallback", "read_wandb_run", "levenshtein",
                    "RouterSite", "BufferSink", "find_routers"):
        assert removed not in grokmon.__all__
        with pytest.raises(AttributeError):
            getattr(grokmon, removed)


def test_no_shim_modules_or_aliases() -> None:
    package = Path(grokmon.__file__).parent
    assert not (package / "wandb_records.py").exists()  # grokmon.sinks.wandb_file is the one path
    # renamed before the first release, with no alias left behind (docs/architecture.md's layers)
    for gone in ("testing", "validation.py", "schedule.py", "metrics/routing.py"):
        assert not (package / gone).exists(), gone
    assert not hasattr(grokmon.GrokkingMonitor, "hf_callback") and not hasattr(grokmon.GrokkingMonitor,
                                                                                "lightning_callback")
    import grokmon.alerts as alerts
    import grokmon.metrics as metrics

    assert not hasattr(alerts, "LoadResult") and hasattr(metrics, "LoadResult")  # no clash left
    assert not hasattr(grokmon.GrokkingMonitor, "probe")  # probe_now is the one name


#: the package each adapter needs (the engines' adapters run in the `engine` test environment)
NEEDS = {"GrokkingLightningCallback": "lightning", "GrokkingOLMoCoreCallback": "olmo_core",
         "GrokkingOLMoCoreCallbackConfig": "olmo_core", "GrokkingMetricsProcessor": "torchtitan",
         "GrokkingBridgeCallback": "megatron.core", "MegatronProbeModel": "megatron.core"}
ENGINES = ("olmo_core", "torchtitan", "megatron.core")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.engine] if NEEDS.get(n) in ENGINES else [])
                                  for n in integrations.__all__])
def test_adapters_share_one_prefix_and_are_plain_module_classes(name: str) -> None:
    if name in NEEDS:
        need(NEEDS[name])
    assert name.startswith("Grokking") or name == "MegatronProbeModel"  # a model wrapper, not a callback
    cls = getattr(integrations, name)
    assert inspect.isclass(cls) and "<locals>" not in cls.__qualname__
    module = importlib.import_module(cls.__module__)
    assert getattr(module, cls.__qualname__) is cls  # defined where it says, not built at run time
