"""A real Accelerate loop with gradient accumulation: probes per optimizer update, accelerator.log, checkpointing."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from moe_models import tiny_model

from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet


class RecordingTracker(GeneralTracker):
    name = "recording"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        pass

    def log(self, values, step=None, **kwargs):
        self.rows.append((step, dict(values)))


def test_accelerate_loop_logs_probe_steps_and_checkpoints_the_monitor(tmp_path) -> None:
    tracker = RecordingTracker()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2, log_with=[tracker], project_dir=str(tmp_path))
    accelerator.init_trackers("grokmon-test")
    model = tiny_model("qwen3_moe")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(2, 128, (12, 2, 10), generator=torch.Generator().manual_seed(0))
    model, opt = accelerator.prepare(model, opt)
    probe = ProbeSet.from_token_ids(torch.randint(2, 128, (6, 10), generator=torch.Generator().manual_seed(1)))
    monitor = GrokkingMonitor(probe, MonitorConfig(every=2, output_dir=tmp_path, async_metrics=False),
                              accelerator=accelerator)
    accelerator.register_for_checkpointing(monitor)
    global_step = 0
    for batch in data:
        with accelerator.accumulate(model):
            loss = model(input_ids=batch, labels=batch).loss
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
        if accelerator.sync_gradients:
            global_step += 1
            monitor.step(model, global_step, optimizer=opt)
    monitor.flush()
    assert global_step == 6
    logged = [(step, row) for step, row in tracker.rows if "grokmon/pathway_distance" in row]
    assert [step for step, _ in logged] == [2, 4, 6]
    assert logged[-1][1]["grokmon/pathway_distance"] == monitor.history[-1][1]["grokmon/pathway_distance"]

    accelerator.save_state(str(tmp_path / "ckpt"))
    fresh = GrokkingMonitor(probe, MonitorConfig(every=2, output_dir=tmp_path / "fresh", async_metrics=False))
    accelerator._custom_objects.clear()
    accelerator.register_for_checkpointing(fresh)
    accelerator.load_state(str(tmp_path / "ckpt"))
    assert fresh.last_probe_step == 6 and not fresh.should_probe(6) and fresh.should_probe(8)
    # probe count, fingerprint, stage state, and the last pathways (pathway_drift after the restart)
    assert fresh.state_dict(include_pathways=False) == monitor.state_dict(include_pathways=False)
    assert torch.equal(fresh.pathways_state()["mean_weights"], monitor.pathways_state()["mean_weights"])
    accelerator.end_training()
