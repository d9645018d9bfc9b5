"""Train one cell of the validation matrix with a :class:`grokmon.GrokkingMonitor` attached.

A cell is (family, task, MoE layers, seed). Minibatch AdamW with strong weight decay (the grokking
recipe of examples/grokking_task.py); every ``every`` steps the cell records, per domain, train and
held-out accuracy and the training loss, lets the monitor probe (live metrics, stages and the
README's plateau rule go to ``live/grokmon.jsonl``), and keeps the probe's raw pathways (whole
sample, and the prompt without its answer) in ``probes.pt`` so that every metric variant can be
recomputed later without training again. ``result.json`` marks a finished cell.

A cell that is cut (a session ends, the machine restarts) resumes: every ``checkpoint_s`` seconds
(at a probe step) the model, optimizer, schedule, minibatch generator, the records so far and the
monitor's state go to ``checkpoint.pt``; the next ``run`` continues from there (the live JSONL
record is cut back to the checkpoint's step by the monitor's own resume).

Example:
    >>> cell = Cell("olmoe", "add", layers=2, seed=0)
    >>> cell.name
    'olmoe-add-L2-s0'
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from grokmon import GrokkingMonitor, MonitorConfig, MetricConfig, PlateauRule, ProbeSet
from grokmon.routing import capture_pathways
from grokmon.torchfile import load_torch_file

from .families import make_model
from .tasks import Split, Task, make_task, vocab_size

#: the README's recommended plateau rule, measured on the matrix (docs/alerts.md)
README_RULE = dict(metric="pathway_distance", mode="min", patience=5, min_delta=0.01)


@dataclass(frozen=True)
class Cell:
    """One run. ``canary``: share of random-label canaries (its own domain); ``rung``: the scale
    ladder's rung (names the cell ``<family>-<task>-R<rung>-s<seed>``); ``train_fraction``: None for
    the task's default; ``tag``: a ladder recipe's label, appended to the name (``...-s0-f50``), so
    that a retuned recipe gets new cells instead of the old records."""

    family: str
    task: str
    layers: int = 2
    seed: int = 0
    p: int = 47
    steps: int = 3000
    every: int = 100
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1.0
    probe_per_domain: int = 64
    canary: float = 0.0
    hidden: int = 64
    experts: int = 8
    top_k: int = 2
    train_fraction: float | None = None
    rung: int | None = None
    tag: str = ""
    checkpoint_s: float = 600.0

    @property
    def name(self) -> str:
        if self.rung is not None:
            return f"{self.family}-{self.task}-R{self.rung}-s{self.seed}" + (f"-{self.tag}" if self.tag else "")
        return f"{self.family}-{self.task}-L{self.layers}-s{self.seed}" + ("-c" if self.canary else "")


def _probe_rows(task: Task, per_domain: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 7)
    picks = []
    for d in range(len(task.domains)):
        members = (task.train.domain == d).nonzero().squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=g)[:per_domain]])
    return torch.cat(picks)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, split: Split, domains: tuple[str, ...]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-domain accuracy and mean loss of the answer token (eval mode)."""
    model.eval()
    logits = model(input_ids=split.prompts(), logits_to_keep=1).logits[:, -1, :].float()
    model.train()
    loss = torch.nn.functional.cross_entropy(logits, split.answer, reduction="none")
    right = (logits.argmax(-1) == split.answer).float()
    acc = {d: float(right[split.domain == i].mean()) for i, d in enumerate(domains)}
    los = {d: float(loss[split.domain == i].mean()) for i, d in enumerate(domains)}
    return acc, los


def _capture(model: torch.nn.Module, ids: torch.Tensor, groups: torch.Tensor, names: tuple[str, ...]) -> dict[str, Any]:
    res = capture_pathways(model, ids, keep_token_ids=True, batch_size=len(ids), groups=groups, group_names=names)
    state = res.pathways.state_dict()
    state["mean_weights"] = state["mean_weights"].half()
    return {"pathways": state, "loss": None if res.loss_per_sample is None else res.loss_per_sample.float()}


def run_cell(cell: Cell, root: Path, log=print, stop_at: int | None = None) -> dict[str, Any] | None:
    """Train ``cell`` into ``root / cell.name``; returns (and writes) its ``result.json``.

    ``stop_at``: leave at that probe step after its checkpoint, as a cut session would (returns None).
    """
    out = root / cell.name
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    started = time.perf_counter()
    task = make_task(cell.task, cell.p, cell.seed, canary=cell.canary, fraction=cell.train_fraction)
    model = make_model(cell.family, cell.layers, vocab_size(cell.p, bool(cell.canary)), cell.seed,
                       experts=cell.experts, top_k=cell.top_k, hidden=cell.hidden, expert_size=cell.hidden)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cell.lr, betas=(0.9, 0.98), weight_decay=cell.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))

    rows = _probe_rows(task, cell.probe_per_domain, cell.seed)
    probe_ids, probe_dom = task.train.ids[rows], task.train.domain[rows]
    probe = ProbeSet.from_token_ids(probe_ids, groups=probe_dom, group_names=list(task.domains), min_length=5)
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=cell.every, output_dir=out / "live", keep_token_ids=True, batch_size=len(probe), metrics=MetricConfig(extra_forms=("topk", "token")), async_metrics=False, on_error="raise", save_probe=False, flush_on_sigterm=False),
                              alerts=[PlateauRule(README_RULE["metric"], mode=README_RULE["mode"], patience=README_RULE["patience"],
                            min_delta=README_RULE["min_delta"])])
    g = torch.Generator().manual_seed(cell.seed + 1)
    n = len(task.train)
    records: list[dict[str, Any]] = []
    train_loss, window_max, first, probed = math.nan, math.nan, 0, -1
    ckpt = out / "checkpoint.pt"
    spent = 0.0   # seconds of earlier sessions of this cell
    if ckpt.exists():
        state = load_torch_file(ckpt, what="a validation cell checkpoint", fix="delete it to start the cell over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        g.set_state(state["generator"])
        # the checkpoint is taken after the probe of ``step`` and before its training step
        records, first, spent = state["records"], state["step"], state["seconds"]
        probed = first
        train_loss, window_max = state["train_loss"], state["window_max"]
        monitor.load_state_dict(state["monitor"])
        log(f"{cell.name} resumed at step {first} ({spent:.0f} s spent before)")
    saved_at = time.perf_counter()
    for step in range(first, cell.steps + 1):
        if step % cell.every == 0 and step != probed:
            held_acc, held_loss = _evaluate(model, task.held, task.domains)
            train_acc, train_loss_d = _evaluate(model, task.train, task.domains)
            live = monitor.step(model, step)
            records.append({
                "step": step, "held_acc": held_acc, "held_loss": held_loss, "train_acc": train_acc,
                "train_loss": train_loss_d, "minibatch_loss": train_loss, "minibatch_max": window_max,
                "full": _capture(model, probe_ids, probe_dom, task.domains),
                "prompt": _capture(model, probe_ids[:, :-1], probe_dom, task.domains),
            })
            window_max = math.nan
            stage = live.get("grokmon/stage")
            log(f"{cell.name} step {step:5d}  held-out {', '.join(f'{d} {a:.2f}' for d, a in held_acc.items())}  "
                f"train {min(train_acc.values()):.2f}  distance {live.get('grokmon/pathway_distance', math.nan):.4f}"
                f"  stage {stage}  {spent + time.perf_counter() - started:.0f}s")
            if step < cell.steps and time.perf_counter() - saved_at >= cell.checkpoint_s:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                            "generator": g.get_state(), "records": records, "step": step, "train_loss": train_loss,
                            "window_max": window_max, "monitor": monitor.state_dict(),
                            "seconds": spent + time.perf_counter() - started}, ckpt.with_suffix(".tmp"))
                ckpt.with_suffix(".tmp").replace(ckpt)
                saved_at = time.perf_counter()
            if step == stop_at:
                monitor.close()
                return None
        if step == cell.steps:
            break
        idx = torch.randint(0, n, (cell.batch,), generator=g)
        logits = model(input_ids=task.train.prompts()[idx], logits_to_keep=1).logits[:, -1, :].float()
        loss = torch.nn.functional.cross_entropy(logits, task.train.answer[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_loss = float(loss.detach())
        window_max = train_loss if not train_loss <= window_max else window_max  # NaN-safe running max
    monitor.close()
    torch.save(records, out / "probes.pt")
    result = {"cell": asdict(cell), "name": cell.name, "domains": list(task.domains),
              "train_size": len(task.train), "held_size": len(task.held), "probe_size": len(probe),
              "parameters": sum(p.numel() for p in model.parameters()),
              "seconds": round(spent + time.perf_counter() - started, 1),
              "final_held_acc": records[-1]["held_acc"], "max_held_acc": {
                  d: max(r["held_acc"][d] for r in records) for d in task.domains}}
    done.write_text(json.dumps(result, indent=1))
    ckpt.unlink(missing_ok=True)
    return result
