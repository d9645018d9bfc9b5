"""OLMo-core (ai2-olmo-core 3.x): router capture checked by hand, and GrokkingOLMoCoreCallback in OLMo-core's
real Trainer, 1 process and 2 gloo processes (DDP and FSDP) giving the same grokmon values.

Capture: OLMo-core's ``MoELinearRouter`` in every gating variant (softmax, sigmoid, p-norm
normalised weights, ``score_bias`` that changes the selection), read through grokmon's capture, is
compared with a reference computed here from the router's flat weight alone:
``scores = softmax|sigmoid(x @ W.view(E, D).T)``, chosen ``topk(scores + score_bias)``, weights the
chosen scores divided by their sum. These routers run without Triton.

Trainer: ``tests/olmo_core_support.py`` runs ``examples/olmo_core_train.py`` (a tiny MoE transformer,
OLMo-core's Triton MoE kernels in Triton's CPU interpreter) with ``GrokkingOLMoCoreCallback``, 2 steps, probes
at steps 0 and 2, in 1 process and in 2 rank processes over gloo. Skipped without ai2-olmo-core / triton.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from grokmon.config import MonitorConfig
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import run_ranks  # noqa: E402
from olmo_core_support import olmo_core_missing  # noqa: E402

_olmo_core_skip = pytest.mark.skipif(olmo_core_missing() is not None, reason=f"OLMo-core: {olmo_core_missing()}")


def needs_olmo_core(test):
    """Marks ``test`` as an engine test (it runs in .venv-engines) that skips, naming the reason, without OLMo-core."""
    return pytest.mark.engine(_olmo_core_skip(test))

SUPPORT = Path(__file__).resolve().parent / "olmo_core_support.py"
E, D, K, LAYERS = 6, 8, 2, 2


# ------------------------------------------------------------------------------------ without OLMo-core
def test_docs_script_is_the_example() -> None:
    """docs/engines.md shows examples/olmo_core_train.py (minus its docstring), unchanged."""
    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "engines.md").read_text()
    section = page.split("## OLMo-core", 1)[1]
    shown = section.split("```python notest\n", 1)[1].split("```", 1)[0]
    body = (root / "examples" / "olmo_core_train.py").read_text().split('"""', 2)[2].lstrip()
    assert shown == body


def test_missing_olmo_core_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OLMo-core, importing the adapter says what to install; grokmon itself imports fine."""
    import importlib

    from grokmon.errors import ConfigError

    monkeypatch.delitem(sys.modules, "grokmon.integrations.olmo_core", raising=False)
    monkeypatch.setitem(sys.modules, "olmo_core.train.callbacks", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install grokmon\[olmo-core\]"):
        importlib.import_module("grokmon.integrations.olmo_core")
    importlib.import_module("grokmon.routing")


def test_reader_and_flat_weight_rows_without_olmo_core() -> None:
    """The router is declared by class path, and its reader works on a hand-made output (no OLMo-core)."""
    import grokmon  # noqa: F401  - declares the engines' routers
    from grokmon import _router_table
    from grokmon.engines.olmo_core import read_router
    from grokmon.routing import RouterSite

    assert _router_table.lookup("olmo_core.nn.moe.router.MoERouter") == ("grokmon.engines.olmo_core:read_router",
                                                                         "mlp")

    class FlatRouter(nn.Module):  # OLMo-core's contract: flat (E * d_model,) weight, (weights, ids, counts, aux)
        num_experts, d_model = 3, 2

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.arange(6.0))

        def get_expert_logits(self, x):
            return x @ self.weight.view(3, 2).T

    router = FlatRouter()
    x = torch.tensor([[[1.0, -1.0], [0.5, 2.0]]])                     # B=1, S=2, D=2
    weights = torch.tensor([[[0.2, 0.6], [0.3, 0.1]]])                 # chosen scores, not ordered
    ids = torch.tensor([[[0, 2], [1, 0]]])
    out = read_router(router, (x,), (weights, ids, torch.tensor([2, 1, 1]), None))
    assert out.expert_ids.tolist() == [[2, 0], [1, 0]]                # as given, ordered by weight
    torch.testing.assert_close(out.weights, torch.tensor([[0.75, 0.25], [0.75, 0.25]]))
    torch.testing.assert_close(out.logits, torch.tensor([[-1.0, -1.0, -1.0], [2.0, 7.0, 12.0]]))
    site = RouterSite(name="blocks.0.feed_forward_moe.router", layer=0, kind="mlp", module=router,
                      extractor=read_router, num_experts=3)
    torch.testing.assert_close(site.router_weight(), torch.arange(6.0).view(3, 2))


# ------------------------------------------------------------------------------------ router capture
class RouterStack(nn.Module):
    """Embeddings, then one OLMo-core router per layer; ``x`` moves on by ``x + tanh(x)`` (known here)."""

    def __init__(self, **router_kwargs):
        from olmo_core.nn.moe.router import MoELinearRouter

        super().__init__()
        self.embed = nn.Embedding(50, D)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"router": MoELinearRouter(d_model=D, num_experts=E, top_k=K, **router_kwargs)})
            for _ in range(LAYERS))

    def forward(self, input_ids, **kwargs):
        x = self.embed(input_ids)
        for block in self.blocks:
            block["router"](x)
            x = x + torch.tanh(x)
        return x


def _reference(model: RouterStack, ids: torch.Tensor, gating: str) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Per layer: chosen experts [N, T, k] (by weight, descending), per-sample mean weights [N, E], logits."""
    x = model.embed.weight[ids].double()
    chosen, means, logits_all = [], [], []
    for block in model.blocks:
        r = block["router"]
        w = r.weight.detach().double().reshape(E, D)  # OLMo-core keeps it flat: (E * D,)
        logits = x @ w.T
        scores = torch.softmax(logits, -1) if gating == "softmax" else torch.sigmoid(logits) + 1e-7
        bias = r.score_bias.double() if r.score_bias is not None else torch.zeros(E, dtype=torch.float64)
        sel = torch.topk(scores + bias, K, dim=-1).indices
        wts = scores.gather(-1, sel)
        wts = wts / wts.sum(-1, keepdim=True)
        order = torch.argsort(wts, dim=-1, descending=True, stable=True)
        chosen.append(sel.gather(-1, order))
        dense = torch.zeros(*ids.shape, E, dtype=torch.float64).scatter_add_(-1, sel, wts)
        means.append(dense.mean(dim=1))
        logits_all.append(logits)
        x = x + torch.tanh(x)
    return torch.stack(chosen, dim=2), torch.stack(means, dim=1), logits_all


@needs_olmo_core
@pytest.mark.parametrize("variant", [
    {"gating": "softmax"},
    {"gating": "sigmoid"},
    {"gating": "softmax", "normalize_expert_weights": 2.0},
    {"gating": "sigmoid", "normalize_expert_weights": 1.0},
    {"gating": "softmax", "bias": True},
    {"gating": "sigmoid", "bias": True, "normalize_expert_weights": 2.0},
], ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_router_capture_matches_hand_reference(variant: dict) -> None:
    from olmo_core.nn.moe.router import MoERouterGatingFunction

    from grokmon.routing import capture_pathways, find_routers

    kwargs = {"gating_function": MoERouterGatingFunction(variant["gating"])}
    if "normalize_expert_weights" in variant:
        kwargs["normalize_expert_weights"] = variant["normalize_expert_weights"]
    if variant.get("bias"):
        kwargs["bias_gamma"] = 1e-3
    torch.manual_seed(0)
    model = RouterStack(**kwargs)
    with torch.no_grad():
        for block in model.blocks:  # the trunc-normal init (std 0.02) routes near-uniformly: spread it
            block["router"].weight.mul_(50)
            if variant.get("bias"):  # a learned balancing bias large enough to change the choice
                block["router"].score_bias.copy_(torch.linspace(-0.3, 0.3, E))
    ids = torch.randint(0, 50, (5, 7), generator=torch.Generator().manual_seed(1))

    sites = find_routers(model)
    assert [s.name for s in sites] == ["blocks.0.router", "blocks.1.router"]
    result = capture_pathways(model, ids, compute_loss=False, keep_token_ids=True, batch_size=2)
    pw = result.pathways
    chosen, means, logits = _reference(model, ids, variant["gating"])

    assert torch.equal(pw.token_ids.long(), chosen), "expert ids differ from the hand reference"
    torch.testing.assert_close(pw.mean_weights.double(), means, atol=1e-5, rtol=1e-5)
    rows = torch.stack([b["router"].weight.detach().reshape(E, D) for b in model.blocks])
    torch.testing.assert_close(pw.router_weights, rows)
    if variant.get("bias"):  # the bias really changed the selection, and grokmon kept the router's own choice
        x = model.embed.weight[ids].double()
        plain = torch.topk(x @ rows[0].double().T, K, dim=-1).indices.sort(-1).values
        assert not torch.equal(plain, chosen[:, :, 0].sort(-1).values)

    # one router call read directly: logits are x @ W.T (before gating and bias), weights sum to 1
    x = model.embed.weight[ids].detach()
    router = model.blocks[0]["router"].eval()
    with torch.no_grad():
        out = sites[0].extractor(router, (x,), router(x))
    torch.testing.assert_close(out.logits.double(), logits[0].reshape(-1, E), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(out.weights.shape[0]))
    assert out.num_experts == E and torch.equal(out.expert_ids, chosen[:, :, 0].reshape(-1, K))


@needs_olmo_core
def test_callback_config_is_plain_settings_and_builds_the_monitor(tmp_path) -> None:
    """OLMo-core's CallbackConfig idiom: TrainerConfig copies plain settings; build(trainer) makes the monitor."""
    import copy

    from olmo_core.train import TrainerConfig
    from olmo_core.train.callbacks import GarbageCollectorCallback

    from grokmon import MonitorConfig, ProbeSet
    from grokmon.integrations.olmo_core import GrokkingOLMoCoreCallback, GrokkingOLMoCoreCallbackConfig

    ProbeSet.from_token_ids(torch.randint(2, 50, (4, 8))).save(tmp_path / "probe.pt")
    settings = GrokkingOLMoCoreCallbackConfig(probe=str(tmp_path / "probe.pt"),
                                              monitor=MonitorConfig(every=3, output_dir=str(tmp_path / "g")))
    config = TrainerConfig(save_folder=str(tmp_path / "ckpt")).with_callback("grokmon", settings)
    config = config.with_callback("gc", GarbageCollectorCallback())  # deep-copies the callbacks already added
    assert config.callbacks["grokmon"] == settings and config.callbacks["grokmon"] is not settings
    assert not hasattr(GrokkingOLMoCoreCallback, "__deepcopy__")
    callback = config.callbacks["grokmon"].build(trainer=None)
    try:
        assert isinstance(callback, GrokkingOLMoCoreCallback) and callback.monitor.config.every == 3
        assert callback != GrokkingOLMoCoreCallback(callback.monitor)  # one callback per monitor
    finally:
        callback.monitor.close()
    assert GrokkingOLMoCoreCallbackConfig(probe="unused", enabled=False).build(trainer=None) is None
    assert copy.deepcopy(settings) == settings


@needs_olmo_core
def test_callback_needs_a_monitor() -> None:
    from grokmon.errors import ConfigError
    from grokmon.integrations import GrokkingOLMoCoreCallback

    with pytest.raises(ConfigError, match=r"GrokkingOLMoCoreCallback needs a GrokkingMonitor, got object: pass "
                                          r"GrokkingOLMoCoreCallback\(monitor\)$"):
        GrokkingOLMoCoreCallback(object())


# ------------------------------------------------------------------------------------ Trainer runs
STEPS, EVERY = 2, 2


def _run(out: Path, world: int, dp: str | None) -> dict:
    """Train in ``world`` processes; the JSONL record (probe step -> values) and the trainer-logged values."""
    run_ranks([SUPPORT, out, STEPS, EVERY] + ([dp] if dp else []), world, timeout=400,
              PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                          os.environ.get("PYTHONPATH", "")]))
    lines = [json.loads(line) for line in (out / "grokmon" / "grokmon.jsonl").read_text().splitlines()]
    assert "config" in lines[0]   # the configuration line first
    return {"jsonl": {rec["step"]: rec["metrics"] for rec in lines[1:]},
            "logged": json.loads((out / "logged.json").read_text()), "out": out}


def _values(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    return _run(tmp_path_factory.mktemp("olmo1"), 1, None)


@needs_olmo_core
def test_trainer_single_process(single: dict) -> None:
    jsonl = single["jsonl"]
    assert sorted(jsonl) == [0, 2]  # baseline in pre_train, then every EVERY steps in post_train_batch
    for step, metrics in jsonl.items():
        assert metrics["grokmon/errors"] == 0, (step, metrics)
        for key in ("grokmon/pathway_distance", "grokmon/routing_entropy", "grokmon/pathway_cosine"):
            assert math.isfinite(metrics[key]), (step, key, metrics.get(key))
    assert jsonl[0] != jsonl[2]  # training moved the routing

    # what OLMo-core's metric loggers (W&B, Comet, console) received, through trainer.record_metric
    logged = single["logged"]
    by_probe = {int(v["grokmon/step"]): v for v in logged.values()}
    assert 0 in by_probe and 2 in by_probe, sorted(by_probe)
    for probe_step, values in by_probe.items():
        for key, value in values.items():
            if key != "grokmon/step" and not key.endswith("_seconds"):
                expected = jsonl[probe_step][key]  # the JSONL writes NaN as null
                assert value == pytest.approx(math.nan if expected is None else expected, nan_ok=True), (
                    probe_step, key)

    # the monitor state is in the trainer's own checkpoint
    state = torch.load(single["out"] / "ckpt" / f"step{STEPS}" / "train" / "rank0.pt", weights_only=False)
    monitor_state = state["callbacks"]["grokmon"]["monitor_state"]
    assert monitor_state["last_probe_step"] == STEPS and monitor_state["probe_count"] == 2


@needs_olmo_core
@pytest.mark.slow
@pytest.mark.parametrize("dp", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one(single: dict, dp: str, tmp_path) -> None:
    two = _run(tmp_path, 2, dp)
    assert sorted(two["jsonl"]) == sorted(single["jsonl"])
    for step, expected in single["jsonl"].items():
        got = _values(two["jsonl"][step])
        assert got.keys() == _values(expected).keys(), step
        for key, value in _values(expected).items():
            assert got[key] == pytest.approx(value, abs=1e-4, nan_ok=True), (dp, step, key)


# ------------------------------------------------------------ stop and resume: the Trainer, no Triton
class RouterLM(nn.Module):
    """A language model whose MoE layers are OLMo-core routers mixing expert FFNs by hand (no Triton)."""

    def __init__(self, vocab: int = 50, hidden: int = 16, experts: int = 4):
        from olmo_core.nn.moe.router import MoELinearRouter

        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "router": MoELinearRouter(d_model=hidden, num_experts=experts, top_k=2),
            "experts": nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(experts)),
        }) for _ in range(3))
        self.head = nn.Linear(hidden, vocab)

    def forward(self, input_ids, **kwargs):
        x = self.embed(input_ids)
        for block in self.blocks:
            weights, ids, _, _ = block["router"](x)
            out = torch.zeros_like(x)
            for e, expert in enumerate(block["experts"]):
                gate = (weights * (ids == e)).sum(-1, keepdim=True)
                out = out + gate * expert(x)
            x = x + out
        return self.head(x)


def _basic_trainer(out: Path, monitor, steps: int, save_interval: int = 1000):
    import numpy as np
    from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDatasetConfig, TokenizerConfig
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback
    from olmo_core.train.train_module import BasicTrainModule

    from grokmon.integrations import GrokkingOLMoCoreCallback

    tokens = out / "tokens.npy"
    if not tokens.exists():
        np.random.default_rng(0).integers(2, 50, size=2048, dtype=np.uint16).tofile(tokens)
    dataset = NumpyFSLDatasetConfig(tokenizer=TokenizerConfig(vocab_size=50, eos_token_id=1, pad_token_id=0),
                                    paths=[str(tokens)], sequence_length=8, work_dir=str(out)).build()
    loader = NumpyDataLoaderConfig(global_batch_size=4 * 8, seed=0, work_dir=str(out)).build(dataset)
    class TrainModule(BasicTrainModule):  # 3.0.0's example module leaves the FLOP count unimplemented
        def global_num_flops_in_batch(self, batch):
            return None

    torch.manual_seed(0)
    model = RouterLM()
    module = TrainModule(model, torch.optim.AdamW(model.parameters(), lr=0.05), rank_microbatch_size=32)
    config = TrainerConfig(save_folder=str(out / "ckpt"), max_duration=Duration.steps(steps), save_overwrite=True,
                           metrics_collect_interval=1)
    config = config.with_callback("checkpointer", CheckpointerCallback(save_interval=save_interval))
    trainer = config.build(module, loader)
    trainer.add_callback("grokmon", GrokkingOLMoCoreCallback(monitor))  # a monitor we hold: to the built trainer
    return trainer


def _monitor(out: Path, **settings):
    from moe_models import build_monitor

    from grokmon import ProbeSet

    ids = torch.randint(2, 50, (6, 8), generator=torch.Generator().manual_seed(3))
    return build_monitor(ProbeSet.from_token_ids(ids, groups=["a", "b"] * 3), output_dir=str(out / "grokmon"),
                         on_error="raise", **settings)


def _jsonl_steps(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "grokmon" / "grokmon.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "config" not in r]


@needs_olmo_core
def test_stop_rule_ends_the_olmo_core_run(tmp_path) -> None:
    from grokmon.alerts import PlateauRule

    monitor = _monitor(tmp_path, every=1, alerts=[
        PlateauRule("pathway_distance", patience=1, min_delta=10.0, stop_training=True)])  # a hair trigger
    trainer = _basic_trainer(tmp_path, monitor, steps=30)
    trainer.fit()
    assert monitor.should_stop and trainer.is_canceled
    assert trainer.global_step < 30
    assert _jsonl_steps(tmp_path)[-1] <= trainer.global_step


@needs_olmo_core
def test_monitor_state_resumes_from_the_trainer_checkpoint(tmp_path) -> None:
    import shutil

    first = _monitor(tmp_path, every=2)
    _basic_trainer(tmp_path, first, steps=3, save_interval=2).fit()  # ckpt/step2 mid-run, ckpt/step3 at the end
    assert _jsonl_steps(tmp_path) == [0, 2]
    saved = torch.load(tmp_path / "ckpt" / "step2" / "train" / "rank0.pt", weights_only=False)
    assert saved["callbacks"]["grokmon"]["monitor_state"]["last_probe_step"] == 2  # the probe of its own step
    shutil.rmtree(tmp_path / "ckpt" / "step3")  # the job died after step 2's checkpoint

    again = _monitor(tmp_path, every=2)  # the job restarts: same probe, same folder
    _basic_trainer(tmp_path, again, steps=4, save_interval=2).fit()  # loads ckpt/step2, with the callback's state
    assert [step for step, _ in again.history] == [4]  # no second baseline, step 2 not probed again
    assert _jsonl_steps(tmp_path) == [0, 2, 4]

    from grokmon import GrokkingMonitor, ProbeSet
    from grokmon.errors import GrokmonError

    different = GrokkingMonitor(ProbeSet.from_token_ids(torch.randint(2, 50, (6, 8))),
                                MonitorConfig(every=2, output_dir=str(tmp_path / "other")))
    try:
        with pytest.raises(GrokmonError, match="probe changed"):  # another probe than the checkpoint's
            _basic_trainer(tmp_path, different, steps=8).fit()
    finally:
        different.close()
