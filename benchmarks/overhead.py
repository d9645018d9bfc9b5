"""Monitor overhead: training throughput with the monitor at its cadence vs without, in one run,
and the time the loop is blocked per probe vs one plain no-grad forward of the probe.

    python benchmarks/overhead.py            # CPU-sized defaults
    python benchmarks/overhead.py --every 200 --steps 1000 --layers 16 --experts 64 --top-k 8 --hidden 512

Targets (issue 3): throughput ratio >= 0.99 at the default cadence; blocked / forward <= 1.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import torch  # noqa: E402
from transformers import OlmoeConfig, OlmoeForCausalLM  # noqa: E402

from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet  # noqa: E402


def build(args: argparse.Namespace) -> OlmoeForCausalLM:
    torch.manual_seed(0)
    config = OlmoeConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         num_experts=args.experts, num_experts_per_tok=args.top_k, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return OlmoeForCausalLM(config).to(args.device)


def train(model, steps: int, batch: torch.Tensor, monitor: GrokkingMonitor | None) -> tuple[float, list[float]]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    blocked = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if monitor is not None:
            t = time.perf_counter()
            probing = monitor.should_probe(step)
            monitor.step(model, step, optimizer=opt)
            if probing:
                if batch.is_cuda:
                    torch.cuda.synchronize()
                blocked.append(time.perf_counter() - t)
    if batch.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, blocked


def blocked_vs_forward(args: argparse.Namespace, probe: ProbeSet, repeats: int = 5) -> dict[str, float]:
    """Median seconds: ``monitor.step`` on a probe step (with / without the probe loss) against plain
    no-grad forwards of the same probe batches (``logits_to_keep=1``, and with ``labels`` for the loss)."""
    model = build(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    monitors = {loss: GrokkingMonitor(probe,
                                      MonitorConfig(every=1, jsonl=False, batch_size=32, compute_loss=loss, stages=False))
                for loss in (False, True)}
    times: dict[str, list[float]] = {k: [] for k in ("capture", "capture+loss", "forward", "forward+loss")}

    def plain(with_loss: bool) -> None:
        model.eval()
        with torch.no_grad():
            for i in range(0, args.probe, 32):
                ids = probe.input_ids[i:i + 32].to(args.device)
                if with_loss:
                    model(input_ids=ids, labels=ids, use_cache=False)
                else:
                    model(input_ids=ids, use_cache=False, logits_to_keep=1)
        model.train()

    for r in range(repeats + 1):  # interleaved; the first round is warm-up
        variants = (("forward", lambda: plain(False)), ("capture", lambda: monitors[False].step(model, r)),
                    ("forward+loss", lambda: plain(True)), ("capture+loss", lambda: monitors[True].step(model, r)))
        for name, fn in variants:
            sync()
            t = time.perf_counter()
            fn()
            sync()
            if r:
                times[name].append(time.perf_counter() - t)
            for m in monitors.values():
                m.flush()  # background metrics must not compete with the next timed call (2-core CPU)
    for m in monitors.values():
        m.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=200, help="the monitor's cadence (default 200, as in the docs)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--probe", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(2, args.vocab, (args.batch, args.seq), generator=g).to(args.device)
    probe = ProbeSet.from_token_ids(torch.randint(2, args.vocab, (args.probe, args.seq), generator=g))
    off, on, blocked, ratios = [], [], [], []
    for r in range(args.repeats):
        # paired and in alternating order, so a drift in machine speed (seen here: +-25 % over a
        # minute on a shared VM) hits both sides of each pair alike; the ratio is per pair
        def with_monitor() -> float:
            monitor = GrokkingMonitor(probe, MonitorConfig(every=args.every, jsonl=False, batch_size=32))
            start = time.perf_counter()
            _, b = train(build(args), args.steps, batch, monitor)
            monitor.close()  # the last probe's background metrics are part of the cost
            blocked.extend(b)
            return time.perf_counter() - start

        def without() -> float:
            return train(build(args), args.steps, batch, None)[0]

        if r % 2:
            t_on, t_off = with_monitor(), without()
        else:
            t_off, t_on = without(), with_monitor()
        off.append(t_off)
        on.append(t_on)
        ratios.append(t_off / t_on)
    t_off, t_on = statistics.median(off), statistics.median(on)
    probes = args.steps // args.every
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"model: {args.layers} layers x {args.experts} experts top-{args.top_k}, hidden {args.hidden}")
    print(f"{args.steps} steps, probe every {args.every} ({args.probe} x {args.seq} tokens), {args.repeats} repeats")
    if blocked:
        block = statistics.median(blocked)
        print(f"  training without monitor: {t_off:.2f} s   with: {t_on:.2f} s (median of {args.repeats})")
        print(f"  throughput ratio, median of paired repeats: {statistics.median(ratios):.3f}   "
              f"(range {min(ratios):.3f}-{max(ratios):.3f})")
        print(f"  blocked in-loop per probe: {block * 1000:.0f} ms x {probes} probes: accounts for a ratio of "
              f"{t_off / (t_off + probes * block):.3f}")
    t = blocked_vs_forward(args, probe)
    print(f"  loop blocked per probe, compute_loss=False: {t['capture'] * 1000:.1f} ms   plain no-grad forward "
          f"(logits_to_keep=1): {t['forward'] * 1000:.1f} ms   ratio {t['capture'] / t['forward']:.2f}x")
    print(f"  loop blocked per probe, with probe loss:    {t['capture+loss'] * 1000:.1f} ms   plain no-grad forward "
          f"with labels: {t['forward+loss'] * 1000:.1f} ms   ratio {t['capture+loss'] / t['forward+loss']:.2f}x")


if __name__ == "__main__":
    main()
