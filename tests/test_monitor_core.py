"""GrokkingMonitor in a plain training loop: schedule, exact values, async delivery, faults, state."""

from __future__ import annotations

import json

import pytest
import torch
from moe_models import tiny_model

from grokmon import GrokkingMonitor, MetricConfig, ProbeSet, ThresholdRule, capture_pathways, compute_metrics
from grokmon.errors import ConfigError, GrokmonError, ProbeError
from grokmon.sinks import CallbackSink


def make_probe(n: int = 8, seed: int = 0) -> ProbeSet:
    ids = torch.randint(2, 128, (n, 12), generator=torch.Generator().manual_seed(seed))
    return ProbeSet.from_token_ids(ids, groups=["a"] * (n // 2) + ["b"] * (n - n // 2))


def train(model, steps: int, monitor: GrokkingMonitor | None = None, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(2, 128, (steps, 4, 12), generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(1, steps + 1):
        model.train()
        loss = model(input_ids=data[step - 1], labels=data[step - 1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if monitor is not None:
            monitor.step(model, step, optimizer=opt)
    return losses


def test_probes_only_on_schedule(tmp_path) -> None:
    model = tiny_model("olmoe")
    calls = []
    model.model.layers[0].mlp.gate.register_forward_hook(lambda m, a, o: calls.append(m.training) and None)
    monitor = GrokkingMonitor(make_probe(), every=3, output_dir=tmp_path, async_metrics=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for step in (1, 2, 4, 5):
        monitor.step(model, step, optimizer=opt)
    assert calls == []
    monitor.step(model, 3)
    monitor.step(model, 3)  # the same step twice probes once
    assert calls == [False]  # one probe batch, in eval mode
    assert monitor.last_probe_step == 3


def test_values_equal_direct_capture_and_arrive_with_their_step(tmp_path) -> None:
    model = tiny_model("mixtral")
    probe = make_probe()
    monitor = GrokkingMonitor(probe, every=2, output_dir=tmp_path, metrics=MetricConfig(per_group=True))
    train(model, 4, monitor)
    results = monitor.flush()
    steps = [s for s, _ in monitor.history]
    assert steps == [2, 4]
    direct = capture_pathways(model, probe.input_ids, probe.attention_mask, groups=probe.groups,
                              group_names=probe.group_names)
    expected = compute_metrics(direct.pathways, config=MetricConfig(per_group=True))
    last = monitor.history[-1][1]
    assert last["grokmon/pathway_distance"] == pytest.approx(expected["pathway_distance"], abs=1e-12)
    assert last["grokmon/group/b/pathway_consistency"] == pytest.approx(expected["group/b/pathway_consistency"], abs=1e-6)
    assert last["grokmon/probe_loss"] == pytest.approx(float(direct.loss_per_sample.mean()), abs=1e-6)
    assert "grokmon/pathway_drift" in last and "grokmon/pathway_drift" not in monitor.history[0][1]
    assert last["grokmon/probe_tokens"] == probe.num_tokens and last["grokmon/errors"] == 0
    monitor.close()
    rows = [json.loads(line) for line in (tmp_path / "grokmon.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert results or rows


def test_probe_does_not_change_training(tmp_path) -> None:
    baseline = train(tiny_model("olmoe"), 5)
    monitor = GrokkingMonitor(make_probe(), every=1, output_dir=tmp_path)
    with_monitor = train(tiny_model("olmoe"), 5, monitor)
    monitor.close()
    assert baseline == with_monitor  # bit-identical: no RNG use, no weight change, modes restored


def test_failing_sink_is_dropped_and_jsonl_keeps_the_record(tmp_path) -> None:
    def broken(metrics, step):
        raise ConnectionError("W&B unreachable")

    monitor = GrokkingMonitor(make_probe(), every=1, output_dir=tmp_path, async_metrics=False,
                              sinks=[CallbackSink(broken)])
    model = tiny_model("olmoe")
    with pytest.warns(RuntimeWarning, match="unreachable"):
        for step in range(1, 6):
            monitor.step(model, step)
    assert len(monitor.sinks) == 1  # the broken one is gone after 3 failures
    assert monitor.errors == 3
    monitor.close()
    lines = (tmp_path / "grokmon.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["metrics"]["grokmon/errors"] == 3


def test_probe_failure_warns_counts_and_training_goes_on(tmp_path) -> None:
    model = tiny_model("olmoe")
    with torch.no_grad():
        model.model.layers[1].mlp.gate.weight.fill_(float("nan"))
    monitor = GrokkingMonitor(make_probe(), every=1, output_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="NaN"):
        assert monitor.step(model, 1) == {}
    assert monitor.errors == 1
    strict = GrokkingMonitor(make_probe(), every=1, output_dir=tmp_path / "s", on_error="raise")
    with pytest.raises(GrokmonError, match="NaN"):
        strict.step(model, 1)


def test_worker_exception_surfaces_as_warning(tmp_path, monkeypatch) -> None:
    import grokmon.monitor as monitor_module

    def explode(*args, **kwargs):
        raise RuntimeError("metric bug")

    monkeypatch.setattr(monitor_module, "compute_metrics", explode)
    monitor = GrokkingMonitor(make_probe(), every=1, output_dir=tmp_path)
    monitor.step(tiny_model("olmoe"), 1)
    with pytest.warns(RuntimeWarning, match="metric bug"):
        monitor.flush()
    assert monitor.errors == 1
    monitor.close()


def test_state_round_trip_and_probe_fingerprint(tmp_path) -> None:
    rule = ThresholdRule("probe_loss", above=0.0, stop_training=True)
    monitor = GrokkingMonitor(make_probe(), every=2, output_dir=tmp_path, alerts=[rule], async_metrics=False)
    train(tiny_model("olmoe"), 2, monitor)
    assert monitor.should_stop  # the rule fired on the first probe and asks to stop
    state = json.loads(json.dumps(monitor.state_dict()))
    fresh = GrokkingMonitor(make_probe(), every=2, output_dir=tmp_path, alerts=[ThresholdRule("probe_loss", above=0.0)])
    fresh.load_state_dict(state)
    assert fresh.last_probe_step == 2 and fresh.should_stop and not fresh.should_probe(2) and fresh.should_probe(4)
    other = GrokkingMonitor(make_probe(seed=9), every=2, output_dir=tmp_path / "o")
    with pytest.raises(GrokmonError, match="probe changed"):
        other.load_state_dict(state)


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="every"):
        GrokkingMonitor(make_probe(), every=0)
    with pytest.raises(ConfigError, match="ProbeSet"):
        GrokkingMonitor(torch.zeros(3, 4), every=1)
    monitor = GrokkingMonitor(make_probe(), every=1, jsonl=False, on_error="raise")
    with pytest.raises(ProbeError, match="vocab"):
        monitor.step(tiny_model("olmoe", vocab_size=64), 1)
