"""grokmon's main demo: a tiny OLMoE memorizes modular addition, then groks it; grokmon sees it.

A random-init ``OlmoeForCausalLM`` (2 MoE layers) is trained from scratch with the Hugging Face
``Trainer`` on ``c = a + b mod 47`` (40 % of all pairs). Train accuracy reaches 1.0 within a few
hundred steps; held-out accuracy keeps climbing for thousands more (grokking), while the training
loss stays near zero and says nothing. A :class:`grokmon.GrokkingMonitor` probes 256 *training*
samples every 50 steps and logs the pathway metrics to JSONL and W&B (offline unless you are
logged in). Held-out accuracy is measured alongside for validation only: at the end the demo prints
the Spearman correlation of every grokmon metric, and of the training loss, with held-out accuracy,
and writes a PNG of the curves with the memorization and grokking points marked.

    python examples/grokking_demo.py                     # 18 minutes with the README's install (below)
    python examples/grokking_demo.py --seed 1 --op sub   # another seed / task variant

Time: the README's command, install included, took 18 minutes on a fresh clone on 2 CPU cores
shared with other jobs, at load average 6-10 (the install 6 minutes of it, pip's cache warm; the
run stopped at step 2000). It uses one torch thread unless ``--threads`` says otherwise: on such a
busy machine 2 threads ran 7.7 times slower.

Outputs (``--out``, default ``grokmon_demo/``): ``grokmon.jsonl`` (the monitor's record),
``accuracy.jsonl`` (train / held-out accuracy and train loss per probe step), ``summary.json``
(milestones and the correlation table), ``grokking_demo.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grokking_task import RECIPE, ArithmeticDataset, accuracy, make_dataset, make_model, make_optimizer  # noqa: E402

from grokmon import GrokkingHFCallback, GrokkingMonitor, MonitorConfig, MetricConfig, ProbeSet  # noqa: E402
from grokmon.alerts import STAGES  # noqa: E402
from grokmon.curve_stats import (  # noqa: E402
    correlation_table, first_step_at_or_above, grokking_window, partial_spearman,
)

#: Metrics in the printed table (those the run has), in this order; the rest go to summary.json.
TABLE_KEYS = [
    "pathway_distance", "pathway_distance_raw", "pathway_distance/token", "pathway_consistency",
    "pathway_cosine", "routing_cosine", "routing_entropy", "expert_load_entropy", "pathway_drift",
    "probe_loss",
]


def wandb_mode() -> str:
    """'online' when the user is logged in to W&B (API key in the environment or ~/.netrc), else 'offline'."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


@torch.no_grad()
def train_loss(model: torch.nn.Module, data: ArithmeticDataset) -> float:
    """Mean cross-entropy of the answer token over the whole training set (eval mode, mode restored)."""
    was_training = model.training
    model.eval()
    logits = model(input_ids=data.prompts(), logits_to_keep=1).logits[:, -1, :]
    model.train(was_training)
    return float(torch.nn.functional.cross_entropy(logits.float(), data.c))


def make_accuracy_callback(train: ArithmeticDataset, held: ArithmeticDataset, every: int, out: Path,
                           stop_after_grok: int, monitor: GrokkingMonitor | None = None):
    """A TrainerCallback measuring train / held-out accuracy and train loss every ``every`` steps.

    Values go to ``accuracy.jsonl`` and through ``trainer.log`` (so W&B has ``train/heldout_accuracy``
    next to the grokmon curves). Training stops ``stop_after_grok`` steps after held-out accuracy
    first reaches 0.9, which keeps the demo short while showing the curves settle. One progress line
    per probe: step, accuracies, the training loss, and that probe's distance and stage (printed once
    the monitor's background metrics for that step are in), with a word on the ``unknown`` stage.
    """
    from transformers import TrainerCallback

    class AccuracyCallback(TrainerCallback):
        def __init__(self) -> None:
            self.trainer: Any = None
            self.rows: dict[int, dict[str, float]] = {}
            self.grokked_at: int | None = None
            self.pending: list[tuple[int, int, dict[str, float]]] = []
            self.explained = False
            self.file = open(out / "accuracy.jsonl", "w")

        def measure(self, model: torch.nn.Module, step: int) -> dict[str, float]:
            row = {"train_accuracy": accuracy(model, train), "heldout_accuracy": accuracy(model, held),
                   "train_loss_full": train_loss(model, train)}
            self.rows[step] = row
            self.file.write(json.dumps({"step": step, **row}) + "\n")
            self.file.flush()
            if self.grokked_at is None and row["heldout_accuracy"] >= 0.9:
                self.grokked_at = step
            return row

        def progress(self, step: int, max_steps: int, row: dict[str, float]) -> None:
            """Queue the line of this step; it is printed once the monitor has this probe's values."""
            self.pending.append((step, max_steps, row))
            self.print_ready()

        def print_ready(self, final: bool = False) -> None:
            # the metrics run in the background: print a step's line with that step's own probe values
            # (not the previous probe's), as soon as they are in the monitor's history
            done = {step: m for step, m in (monitor.history if monitor is not None else [])}
            while self.pending and (monitor is None or final or self.pending[0][0] in done):
                step, max_steps, row = self.pending.pop(0)
                last = done.get(step, {})
                distance, stage = last.get("grokmon/pathway_distance"), last.get("grokmon/stage")
                name = "-" if stage is None or stage != stage else STAGES[int(stage)]
                print(f"step {step:5d}/{max_steps}  train acc {row['train_accuracy']:.3f}  held-out acc "
                      f"{row['heldout_accuracy']:.3f}  train loss {row['train_loss_full']:.2e}  distance "
                      f"{'-' if distance is None else f'{distance:.4f}'}  stage {name}", flush=True)
                if name == "unknown" and not self.explained:
                    self.explained = True
                    print("  (stage 'unknown': the probe loss has flattened, so the probe set is memorized; "
                          "grokmon does not claim grokking from the pathways by default, since no pathway "
                          "signal told grokking runs from non-generalizing ones in validation. "
                          "GroupStageTracker(claims=\"distance\") opts in: docs/alerts.md)", flush=True)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.progress(state.global_step, state.max_steps, self.measure(model, state.global_step))

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.print_ready()
            if state.global_step % every:
                return
            row = self.measure(model, state.global_step)
            if self.trainer is not None:
                self.trainer.log(dict(row))
            self.progress(state.global_step, state.max_steps, row)
            if self.grokked_at is not None and state.global_step >= self.grokked_at + stop_after_grok:
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            self.print_ready(final=True)  # the monitor's callback (first in the list) has flushed it
            self.file.close()

    return AccuracyCallback()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = {**RECIPE, "op": args.op, "p": args.p, "train_frac": args.train_frac, "lr": args.lr}
    set_seed(args.seed)
    train, held = make_dataset(args.p, args.op, args.train_frac, seed=args.seed)
    model = make_model(args.p, args.seed, hidden_size=64, intermediate_size=128, num_hidden_layers=args.layers,
                       num_experts=args.experts, num_experts_per_tok=2)
    optimizer, scheduler = make_optimizer(model, recipe)

    # The probe: a fixed, seeded subset of *training* samples, the whole [a, b, =, c] sequence.
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[: args.probe]
    probe = ProbeSet.from_token_ids(train.input_ids[pick], min_length=4)  # 4-token samples
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=args.every, output_dir=out, batch_size=256, metrics=MetricConfig(extra_forms=("token",))))

    report_to: list[str] = []
    if not args.no_wandb:
        try:
            import wandb  # noqa: F401

            os.environ["WANDB_MODE"] = wandb_mode()
            os.environ.setdefault("WANDB_PROJECT", "grokmon-demo")
            os.environ.setdefault("WANDB_DIR", str(out))
            report_to = ["wandb"]
        except ImportError:
            pass
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=args.max_steps, per_device_train_batch_size=len(train),
        logging_steps=args.every, save_strategy="no", report_to=report_to, use_cpu=True, seed=args.seed,
        run_name=f"grokking-demo-{args.op}-p{args.p}-seed{args.seed}", disable_tqdm=True, dataloader_num_workers=0,
    )
    acc = make_accuracy_callback(train, held, args.every, out, args.stop_after_grok, monitor)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, optimizers=(optimizer, scheduler),
                      callbacks=[GrokkingHFCallback(monitor), acc])
    acc.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # the accuracy callback prints one compact line instead
    print(f"training {type(model).__name__} ({args.layers} MoE layers, {args.experts} experts, top-2) on "
          f"a {args.op} b mod {args.p}: {len(train)} train / {len(held)} held-out pairs; probe: {len(probe)} "
          f"training samples every {args.every} steps", flush=True)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    monitor.close()
    return summarize(monitor, seconds, out, args)


def read_run(out: Path) -> tuple[dict[str, dict[int, float]], dict[int, dict[str, float]]]:
    """``(series, rows)`` of a finished run folder: grokmon's metrics (``grokmon.jsonl``) plus the
    training loss as ``{name: {step: value}}``, and the accuracy rows (``accuracy.jsonl``) by step."""
    series: dict[str, dict[int, float]] = {}
    for line in (out / "grokmon.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.get("metrics", {}).items():
            name = key.removeprefix("grokmon/")
            if "/" in name and name not in TABLE_KEYS:
                continue
            series.setdefault(name, {})[record["step"]] = math.nan if value is None else value
    rows = {r["step"]: r for r in map(json.loads, (out / "accuracy.jsonl").read_text().splitlines())}
    series["train_loss"] = {s: r["train_loss_full"] for s, r in rows.items()}
    return series, rows


def analyze_run(out: Path) -> dict[str, Any]:
    """Milestones and, for every metric, Spearman with held-out accuracy over three spans of a run.

    * ``window``: the grokking window, from memorization (train accuracy 1.0) to held-out accuracy
      0.99: where the model generalizes and the paper correlates its metrics with test accuracy;
    * ``after``: every probe from memorization on (the window plus the plateau after it);
    * ``whole``: every probe;
    * ``partial``: ``after``, with the training loss held fixed (partial Spearman): what a metric
      tells about generalization beyond the training loss.
    """
    series, rows = read_run(out)
    train_acc = {s: r["train_accuracy"] for s, r in rows.items()}
    heldout = {s: r["heldout_accuracy"] for s, r in rows.items()}
    memorized = first_step_at_or_above(train_acc, 1.0)
    window = grokking_window(train_acc, heldout)
    start = memorized if memorized is not None else 0
    after_steps = sorted(s for s in heldout if s >= start and s in series.get("pathway_distance", {}))
    partial = {}
    for key, values in series.items():
        x = [values.get(s, math.nan) for s in after_steps]
        partial[key] = partial_spearman(x, [heldout[s] for s in after_steps],
                                        [series["train_loss"][s] for s in after_steps])
    windowed = {k: {s: v for s, v in values.items() if window and window[0] <= s <= window[1]}
                for k, values in series.items()}

    def rho(table: dict) -> dict[str, float]:
        return {k: c.spearman for k, c in table.items()}

    return {
        "memorized_step": memorized, "grokked_step": first_step_at_or_above(heldout, 0.9),
        "window": list(window) if window else None, "final_heldout_accuracy": heldout[max(heldout)],
        "spearman_window": rho(correlation_table(windowed, heldout)),
        "spearman_after_memorization": rho(correlation_table(series, heldout, from_step=start)),
        "spearman_whole_run": rho(correlation_table(series, heldout)),
        "partial_spearman_given_train_loss": partial,
        "points": {"window": sum(1 for s in windowed["train_loss"]), "after_memorization": len(after_steps),
                   "whole_run": len(series["train_loss"])},
    }


def summarize(monitor: GrokkingMonitor, seconds: float, out: Path, args: argparse.Namespace) -> dict:
    """The correlation table (printed), summary.json and the PNG."""
    result = analyze_run(out)
    series, rows = read_run(out)
    # With 2 MoE layers the paper's score C is 1 - cos/cos (one layer pair): ~0 whatever the model does.
    degenerate = {"pathway_consistency"} if args.layers < 3 else set()
    shown = [k for k in TABLE_KEYS if k in series and k not in degenerate] + ["train_loss"]
    window = result["window"]
    print(f"\nmemorized (train acc 1.0) at step {result['memorized_step']}, held-out acc >= 0.9 at step "
          f"{result['grokked_step']}, grokking window {window[0] if window else '-'}-{window[1] if window else '-'} "
          f"(to held-out 0.99), {seconds:.0f} s")
    print("Spearman correlation with held-out accuracy (negative: falls as the model generalizes):")
    points = result["points"]
    print(f"  {'metric':<24} {'grokking window':>16} {'after memorization':>19} {'whole run':>10} "
          f"{'beyond train loss':>18}")
    print(f"  {'(probes)':<24} {points['window']:>16} {points['after_memorization']:>19} {points['whole_run']:>10} "
          f"{'(partial)':>18}")
    for key in shown:
        print(f"  {key:<24} {result['spearman_window'][key]:>16.3f} {result['spearman_after_memorization'][key]:>19.3f}"
              f" {result['spearman_whole_run'][key]:>10.3f} {result['partial_spearman_given_train_loss'][key]:>18.3f}")
    if degenerate:
        print("  (pathway_consistency, the paper's score C, needs >= 3 MoE layers: with 2 it is 1 - cos/cos ~ 0; "
              "pathway_cosine is the raw cosine it is built from)")
    summary = {"config": dict(vars(args)), "seconds": round(seconds, 1), **result}
    (out / "summary.json").write_text(json.dumps(_nan_to_none(summary), indent=1, allow_nan=False, default=str))
    png = plot(series, rows, result["memorized_step"], result["grokked_step"], out / "grokking_demo.png")
    print(f"\nwrote {out / 'summary.json'}, {monitor.jsonl_path}" + (f", {png}" if png else
          " (no plot: pip install matplotlib)"))
    return summary


def _nan_to_none(value: Any) -> Any:
    """NaN -> None everywhere in nested dicts / lists (strict JSON)."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def plot(series: dict[str, dict[int, float]], rows: dict[int, dict[str, float]], memorized: int | None,
         grokked: int | None, path: Path) -> Path | None:
    """Accuracy, training loss and the pathway metrics against step, milestones marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        ("accuracy", [("train accuracy", {s: r["train_accuracy"] for s, r in rows.items()}),
                      ("held-out accuracy", {s: r["heldout_accuracy"] for s, r in rows.items()})], False),
        ("training loss (answer token)", [("train loss", series["train_loss"])], True),
        ("pathway distance (normalised)", [(k, series[k]) for k in ("pathway_distance", "pathway_distance/token")
                                           if k in series], False),
        ("consecutive-layer cosine", [(k, series[k]) for k in ("pathway_cosine", "routing_cosine") if k in series],
         False),
    ]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.3 * len(panels)), sharex=True)
    for ax, (title, curves, log) in zip(axes, panels):
        for label, values in curves:
            steps = sorted(values)
            ax.plot(steps, [values[s] for s in steps], label=label, linewidth=1.4)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(title, fontsize=8)
        for step, label, color in ((memorized, "memorized", "tab:green"), (grokked, "grokked", "tab:red")):
            if step is not None:
                ax.axvline(step, color=color, linestyle="--", linewidth=1)
                if ax is axes[0]:
                    ax.annotate(f"{label} ({step})", (step, 0.5), xycoords=("data", "axes fraction"), rotation=90,
                                fontsize=8, ha="right", va="center", color=color)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    fig.suptitle("grokmon on a grokking run: pathway metrics from training samples vs held-out accuracy", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--op", choices=["add", "sub", "mul"], default="add")
    parser.add_argument("--p", type=int, default=RECIPE["p"], help="the modulus (vocabulary: p numbers + '=')")
    parser.add_argument("--train-frac", type=float, default=RECIPE["train_frac"])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--layers", type=int, default=2, help="MoE layers (consistency needs >= 2)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=6000)
    parser.add_argument("--every", type=int, default=50, help="probe (and accuracy) cadence in optimizer steps")
    parser.add_argument("--probe", type=int, default=256, help="training samples in the probe")
    parser.add_argument("--stop-after-grok", type=int, default=1000,
                        help="steps to keep training once held-out accuracy reaches 0.9")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads. 1 by default: on a busy 2-core machine (load average 7-12) "
                             "2 threads ran 100 steps 7.7x slower than 1 (162 s against 21 s)")
    parser.add_argument("--out", default="grokmon_demo")
    parser.add_argument("--no-wandb", action="store_true", help="skip W&B (JSONL and the PNG are still written)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
