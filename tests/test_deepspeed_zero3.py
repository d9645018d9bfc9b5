"""DeepSpeed ZeRO-3 under the Hugging Face Trainer: 2 gloo ranks on CPU give the 1-process metrics.

The test runs this file as 2 rank processes (``python tests/test_deepspeed_zero3.py OUT``). Each
trains the same seeded tiny OLMoE with ``TrainingArguments(deepspeed=<ZeRO-3 dict>)`` and
``GrokkingHFCallback(monitor)`` for 2 optimizer steps, probing at steps 0, 1 and 2. Under ZeRO-3 every
parameter is partitioned over the ranks: outside a forward a rank holds an empty placeholder, and
the probe forward gathers the weights (a collective every rank takes part in). The reference is
the same training in the test process, without DeepSpeed and without a process group, with the
per-device batch doubled so both runs take the same optimizer steps on the same samples.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child_env import exit_rank_process  # noqa: E402

STEPS, BATCH = 2, 2  # per rank; the 1-process reference uses 2 * BATCH

ZERO3 = {
    # threshold 0: partition every parameter (by default ZeRO-3 keeps small ones, here all, whole on each rank)
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "zero_allow_untested_optimizer": True,  # plain SGD: the same update with and without ZeRO
}


def _rank_main(out_path: str, distributed: bool) -> dict:
    from moe_models import tiny_model
    from transformers import Trainer, TrainingArguments

    from grokmon import GrokkingHFCallback, GrokkingMonitor, MonitorConfig, ProbeSet

    if distributed:
        from test_deepspeed import _no_shm_op

        _no_shm_op()
    world = 2 if distributed else 1
    args = TrainingArguments(
        output_dir=f"{out_path}_out", max_steps=STEPS, per_device_train_batch_size=BATCH * 2 // world,
        optim="sgd", learning_rate=0.05, lr_scheduler_type="constant", report_to="none", use_cpu=True,
        disable_tqdm=True, save_strategy="no", deepspeed=ZERO3 if distributed else None, seed=0,
    )
    rank = args.process_index
    model = tiny_model("olmoe")
    ids = torch.randint(2, 128, (16, 12), generator=torch.Generator().manual_seed(1))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    probe_ids = torch.randint(2, 128, (7, 12), generator=torch.Generator().manual_seed(0))  # odd: padded shards
    probe = ProbeSet.from_token_ids(probe_ids, groups=["a" if i % 3 else "b" for i in range(7)])
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=1, output_dir=f"{out_path}_grokmon{rank}", async_metrics=False, on_error="raise", batch_size=2))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[GrokkingHFCallback(monitor)])
    trainer.train()
    gate = trainer.model.model.layers[0].mlp.gate.weight
    result = {
        "history": [[step, {k: v for k, v in values.items() if not k.endswith("_seconds")}]
                    for step, values in monitor.history],
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "engine": type(trainer.model_wrapped).__name__,
        "partitioned": gate.numel() == 0 and hasattr(gate, "ds_id"),  # ZeRO-3's empty placeholder
    }
    with open(f"{out_path}.{rank}", "w") as handle:
        json.dump(result, handle)
    return result


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_hf_trainer_zero3_two_ranks_equal_one_process(tmp_path) -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: pip install 'grokmon[deepspeed]'")
    from launch import assert_same_values, rank_results, run_ranks

    def reference() -> dict:
        with torch.random.fork_rng():
            return _rank_main(str(tmp_path / "single"), distributed=False)

    single = run_ranks([__file__, tmp_path / "zero3"], 2, meanwhile=reference, timeout=400)
    ranks = rank_results(tmp_path / "zero3", 2)
    assert [step for step, _ in single["history"]] == [0, 1, 2]
    # pathway consistency reads the router weight rows, which ZeRO-3 holds whole only inside the forward
    assert any("consistency" in key for key in single["history"][0][1]), sorted(single["history"][0][1])
    assert single["engine"] != "DeepSpeedEngine" and not single["partitioned"]
    for rank, result in enumerate(ranks):
        assert result["engine"] == "DeepSpeedEngine" and result["partitioned"], (rank, result["engine"])
        assert result["losses"] == pytest.approx(single["losses"], rel=1e-4), rank  # the same training
        assert [step for step, _ in result["history"]] == [0, 1, 2], rank
        for (step, values), (_, expected) in zip(result["history"], single["history"]):
            assert_same_values(values, expected, tol=1e-4, where=(rank, step))


if __name__ == "__main__":
    _rank_main(sys.argv[1], distributed=True)
    exit_rank_process()
