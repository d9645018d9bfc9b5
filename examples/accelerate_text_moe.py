"""grokmon in a plain Accelerate loop: a tiny Mixtral learns a 3-domain text corpus, probed per domain.

A random-init ``MixtralForCausalLM`` (4 MoE layers, 8 experts, top-2, hidden size 64) is trained
from scratch with plain PyTorch + ``accelerate.Accelerator`` on ``examples/data/corpus.jsonl``: 900
short generated texts in three domains, ``code`` (small Python functions), ``prose`` (simple
sentences) and ``numbers`` (arithmetic and number sequences). Tokenization is byte-level (UTF-8
bytes are ids 0-255, plus PAD / BOS / EOS), so nothing is downloaded.

A :class:`grokmon.GrokkingMonitor` probes 16 *training* samples per domain every ``--every``
optimizer steps with per-group metrics on, tracks each domain's stage (loss_falling, then unknown once
its probe loss has converged: grokmon does not claim generalization it cannot see), and watches one
alert rule: a plateau of the overall pathway distance. Probe metrics go to JSONL and, through
``accelerator.log``, to every tracker of the accelerator (W&B, offline unless ``WANDB_MODE`` says
otherwise). The training loss is logged with ``accelerator.log`` next to them. At the end the
script prints the last probe's pathway distance, probe loss and stage per domain, and the alerts
that fired.

    python examples/accelerate_text_moe.py                          # 400 steps: ~1.5-2.5 min on 2 CPU cores
    python examples/accelerate_text_moe.py --steps 1500 --every 25  # ~6 min: the domains change stage
    python examples/accelerate_text_moe.py --seed 1 --no-wandb      # another seed, JSONL only
    accelerate launch examples/accelerate_text_moe.py               # several processes / GPUs: same code

In the default 400 steps every domain's probe loss is still falling, so all three stay
``loss_falling``, and the plateau alert fires once the overall distance stops falling (step 360 for
seed 0; runs are deterministic for a given seed and ``--threads``).
With ``--steps 1500 --every 25`` the domains memorize one after the other, as the paper's
"asynchronous, local" picture describes: each domain goes ``loss_falling -> unknown`` at its own step
(code first, numbers, the hardest, last). This corpus has no held-out task, so nothing here says
whether a domain generalizes; docs/validation.md measures that question on tasks where it is known.

Outputs (``--out``, default ``grokmon_accelerate_text/``): ``grokmon.jsonl`` (the monitor's record:
one line per probe, plus one per alert and per stage change), ``probe.pt`` (the probe set, written
by the monitor), ``summary.json`` (the final table),
``wandb/`` (the W&B run, unless ``--no-wandb``), ``checkpoint/`` (``accelerator.save_state``, which
includes the monitor's state through ``register_for_checkpointing``).

The corpus is generated deterministically by :func:`generate_corpus`; the committed file is its
output, and ``python examples/accelerate_text_moe.py --write-corpus`` writes it again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from grokmon import GrokkingMonitor, MonitorConfig, MetricConfig, PlateauRule, ProbeSet  # noqa: E402
from grokmon.keys import stage_name  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.jsonl"
DOMAINS = ("code", "prose", "numbers")
CORPUS_SEED = 1234
PER_DOMAIN = 300

# ---------------------------------------------------------------------------------------------------------------------
# Byte-level tokenizer: UTF-8 bytes are ids 0..255, then three special tokens.
PAD, BOS, EOS = 256, 257, 258
VOCAB_SIZE = 264  # 259 ids used, rounded up to a multiple of 8


def encode(text: str, max_len: int | None = None) -> list[int]:
    """``[BOS] + utf-8 bytes + [EOS]``, cut to ``max_len`` ids."""
    ids = [BOS, *text.encode("utf-8"), EOS]
    return ids[:max_len] if max_len is not None else ids


def decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------------------------
# The corpus: three domains of templated text, deterministic for a given seed.
_NAMES = ["value", "count", "total", "items", "data", "score", "index", "size", "width", "price", "speed", "level"]
_FUNCS = ["compute", "update", "scale", "merge", "check", "count", "filter", "clamp", "double", "shift"]
_NOUNS = ["cat", "dog", "bird", "teacher", "farmer", "child", "river", "train", "garden", "city", "robot", "sailor"]
_ADJS = ["small", "quiet", "bright", "old", "happy", "tired", "green", "busy", "gentle", "brave", "cold", "clever"]
_VERBS = ["watches", "follows", "finds", "helps", "carries", "paints", "visits", "hears", "builds", "greets"]
_PLACES = ["the park", "the market", "the station", "the hill", "the school", "the harbor", "the forest", "the bridge"]
_TIMES = ["in the morning", "at night", "every day", "after lunch", "in winter", "before noon", "on sunday"]
_ADVS = ["slowly", "quickly", "carefully", "happily", "quietly", "again", "together"]


def _code(rng: random.Random) -> str:
    f, (a, b) = rng.choice(_FUNCS), rng.sample(_NAMES, 2)
    k, m = rng.randint(1, 9), rng.randint(2, 12)
    kind = rng.randrange(6)
    if kind == 0:
        return f"def {f}_{a}({a}):\n    return {a} * {k} + {m}\n"
    if kind == 1:
        return f"def {f}({a}, {b}):\n    if {a} > {b}:\n        return {a} - {b}\n    return {b} - {a}\n"
    if kind == 2:
        return f"{a} = 0\nfor i in range({m}):\n    {a} += i * {k}\nprint({a})\n"
    if kind == 3:
        return f"{a} = [x * {k} for x in range({m}) if x % 2 == 0]\n"
    if kind == 4:
        return f"def is_{f}({a}):\n    return {a} % {k + 1} == 0\n"
    return f"while {a} < {m * 10}:\n    {a} = {a} + {k}\n"


def _prose(rng: random.Random) -> str:
    def sentence() -> str:
        n1, n2 = rng.sample(_NOUNS, 2)
        return (f"The {rng.choice(_ADJS)} {n1} {rng.choice(_VERBS)} the {rng.choice(_ADJS)} {n2} "
                f"{rng.choice(['at', 'near', 'in', 'behind'])} {rng.choice(_PLACES)} {rng.choice(_TIMES)}.")

    if rng.random() < 0.5:
        return sentence()
    n = rng.choice(_NOUNS)
    return f"{sentence()} Then the {n} walks home {rng.choice(_ADVS)}."


def _numbers(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        return f"{a} + {b} = {a + b}"
    if kind == 1:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f"{a} * {b} = {a * b}; {a * b} - {a} = {a * b - a}"
    if kind == 2:
        start, step = rng.randint(0, 20), rng.randint(2, 9)
        return ", ".join(str(start + i * step) for i in range(rng.randint(6, 10)))
    a = rng.randint(100, 999)
    return f"{a} has digits {', '.join(str(a))} and digit sum {sum(int(d) for d in str(a))}"


def generate_corpus(seed: int = CORPUS_SEED, per_domain: int = PER_DOMAIN) -> list[dict[str, str]]:
    """``per_domain`` texts per domain, interleaved code / prose / numbers; same seed, same corpus."""
    rng = random.Random(seed)
    makers = {"code": _code, "prose": _prose, "numbers": _numbers}
    return [{"text": makers[d](rng), "domain": d} for _ in range(per_domain) for d in DOMAINS]


def write_corpus(path: Path = CORPUS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in generate_corpus():
            f.write(json.dumps(row) + "\n")
    return path


def load_corpus(path: Path = CORPUS) -> list[dict[str, str]]:
    """The committed corpus, or the same corpus generated in memory when the file is missing."""
    if not path.exists():
        return generate_corpus()
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------------------------------
def make_model(seed: int, layers: int = 4) -> torch.nn.Module:
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    config = MixtralConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=256, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        router_aux_loss_coef=0.01, output_router_logits=True,  # + load-balancing loss tie_word_embeddings=False,
    )
    return MixtralForCausalLM(config)


def collate(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-pad a batch of id lists; padded positions are masked out and ignored by the loss."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_probe(corpus: list[dict[str, str]], per_group: int, seq_len: int, seed: int) -> ProbeSet:
    """``per_group`` training samples of each domain, seeded, grouped by domain."""
    g = random.Random(seed)
    ids, domains = [], []
    for d in DOMAINS:
        members = [row["text"] for row in corpus if row["domain"] == d]
        for text in g.sample(members, per_group):
            ids.append(encode(text, seq_len))
            domains.append(d)
    return ProbeSet.from_token_ids(ids, groups=domains, seq_len=seq_len, pad_token_id=PAD, vocab_size=VOCAB_SIZE,
                                   source={"corpus": CORPUS.name, "tokenizer": "utf-8 bytes"})


def wandb_available() -> bool:
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    use_wandb = not args.no_wandb and wandb_available()
    if not args.no_wandb and not use_wandb:
        print("wandb is not installed: logging to JSONL only")
    if use_wandb:
        os.environ.setdefault("WANDB_MODE", "offline")  # online only when the user asks for it
        os.environ.setdefault("WANDB_SILENT", "true")
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, log_with="wandb" if use_wandb else None,
                              project_dir=str(out))
    config = {k: v for k, v in vars(args).items() if k != "write_corpus"}
    accelerator.init_trackers(args.project, config=config,
                              init_kwargs={"wandb": {"dir": str(out), "name": f"accelerate-text-moe-seed{args.seed}"}})
    set_seed(args.seed)

    corpus = load_corpus()
    samples = [encode(row["text"], args.seq_len) for row in corpus]
    loader = DataLoader(samples, batch_size=args.batch_size, shuffle=True, collate_fn=collate, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    model = make_model(args.seed, args.layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.1)
    warmup = max(1, args.steps // 20)

    def lr_factor(s: int) -> float:  # linear warmup, then cosine decay to 10 % of --lr
        cosine = 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
        return min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * cosine)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    # The probe: 16 training samples per domain; per-group metrics and stages come from its groups.
    probe = build_probe(corpus, args.probe_per_group, seq_len=64, seed=args.seed)
    events: list[Any] = []
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=args.every, output_dir=out, metrics=MetricConfig(per_group=True)),
                              accelerator=accelerator,
                              alerts=[PlateauRule("pathway_distance", mode="min", patience=args.patience, min_delta=0.01,
                            warmup=args.alert_warmup)],
                              on_alert=events.append)
    accelerator.register_for_checkpointing(monitor)

    accelerator.print(f"training {type(accelerator.unwrap_model(model)).__name__} ({args.layers} MoE layers, "
                      f"8 experts, top-2) on {len(corpus)} texts ({', '.join(DOMAINS)}), byte-level vocab "
                      f"{VOCAB_SIZE}; probe: {len(probe)} training samples ({args.probe_per_group} per domain) "
                      f"every {args.every} steps")
    start = time.perf_counter()
    global_step, running, aux, count = 0, 0.0, 0.0, 0
    monitor.probe_now(model, global_step)  # baseline probe before any update
    model.train()
    done = False
    while not done:  # epochs
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss  # next-byte cross-entropy + 0.01 x load-balancing loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running += loss.detach().float().item()
            aux += outputs.aux_loss.detach().float().item()
            count += 1
            if not accelerator.sync_gradients:
                continue
            global_step += 1  # one optimizer update happened
            monitor.step(model, global_step)  # every rank; probes on schedule, delivers finished results
            train_loss, aux_loss = running / count, aux / count  # means over the update's micro-batches
            running, aux, count = 0.0, 0.0, 0
            accelerator.log({"train/loss": train_loss, "train/aux_loss": aux_loss,
                             "train/lr": scheduler.get_last_lr()[0]}, step=global_step)
            if global_step % args.print_every == 0 or global_step == args.steps:
                accelerator.print(f"step {global_step:4d}/{args.steps}  train loss {train_loss:.3f}  "
                                  f"{time.perf_counter() - start:5.0f} s", flush=True)
            done = monitor.should_stop or global_step >= args.steps  # stop_training=True rules set should_stop
            if done:
                break
    seconds = time.perf_counter() - start
    # Deliver the last probe's metrics first: the alert / stage state that save_state records
    # (monitor.state_dict(), via register_for_checkpointing) only includes delivered probes.
    monitor.flush()
    accelerator.save_state(str(out / "checkpoint"))
    monitor.close()
    summary = summarize(monitor, events, seconds, accelerator)
    accelerator.end_training()
    return summary


def summarize(monitor: GrokkingMonitor, events: list[Any], seconds: float, accelerator: Any) -> dict[str, Any]:
    """Print the last probe's per-domain table and the alerts; return them."""
    step, last = monitor.history[-1] if monitor.history else (None, {})
    rows = {}
    for g in monitor.probe_set.group_names:
        stage = last.get(f"grokmon/group/{g}/stage")
        rows[g] = {"pathway_distance": last.get(f"grokmon/group/{g}/pathway_distance", math.nan),
                   "probe_loss": last.get(f"grokmon/group/{g}/probe_loss", math.nan),
                   "stage": "-" if stage is None else stage_name(stage)}
    fired = [e for e in events if e.kind != "stage"]
    summary = {"seconds": round(seconds, 1), "last_probe_step": step, "groups": rows,
               "probes": [s for s, _ in monitor.history],
               "alerts": [{"step": e.step, "rule": e.rule, "text": e.text} for e in fired],
               "stage_changes": [{"step": e.step, "text": e.text} for e in events if e.kind == "stage"]}
    if accelerator.is_main_process:
        print(f"\ntrained {seconds:.0f} s; last probe at step {step}:")
        print(f"  {'domain':<8} {'pathway_distance':>16} {'probe_loss':>10}  stage")
        for g, r in rows.items():
            print(f"  {g:<8} {r['pathway_distance']:>16.4f} {r['probe_loss']:>10.3f}  {r['stage']}")
        overall = last.get("grokmon/pathway_distance", math.nan)
        print(f"  {'all':<8} {overall:>16.4f} {last.get('grokmon/probe_loss', math.nan):>10.3f}  "
              f"{'-' if last.get('grokmon/stage') is None else stage_name(last['grokmon/stage'])}")
        for e in events:
            if e.kind == "stage":
                print(f"stage change: {e.text}")
        for e in fired:
            print(f"alert at step {e.step}: {e.title}: {e.text}")
        if not fired:
            print("alerts: none fired")
        print(f"wrote {monitor.jsonl_path}")
        (Path(monitor.config.output_dir) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer updates")
    parser.add_argument("--every", type=int, default=20, help="probe cadence in optimizer updates")
    parser.add_argument("--out", default="grokmon_accelerate_text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-wandb", action="store_true", help="skip W&B (the JSONL record is still written)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=2, help="micro-batches per optimizer update")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--layers", type=int, default=4, help="MoE layers (pathway consistency needs >= 3)")
    parser.add_argument("--seq-len", type=int, default=128, help="training tokens per sample (bytes + BOS/EOS)")
    parser.add_argument("--probe-per-group", type=int, default=16, help="probe samples per domain")
    parser.add_argument("--patience", type=int, default=4, help="probes without improvement before the alert")
    parser.add_argument("--alert-warmup", type=int, default=3, help="first probes the alert rule only watches")
    parser.add_argument("--print-every", type=int, default=50, help="train-loss printing cadence")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for this tiny model on a shared CPU)")
    parser.add_argument("--project", default="grokmon-accelerate-text", help="W&B project")
    parser.add_argument("--write-corpus", action="store_true", help=f"(re)write {CORPUS.name} and exit")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.write_corpus:
        print(f"wrote {write_corpus()}")
    else:
        run(arguments)
