"""A sink that blocks forever vs no sink: per-step training time, in the same run.

    python benchmarks/blocked_sink.py                 # CPU-sized defaults, about 2 minutes
    python benchmarks/blocked_sink.py --steps 120 --every 5 --repeats 3

Both arms train the same random-init OLMoE with a ``GrokkingMonitor`` probing every ``--every``
steps (JSONL off, so the only difference is the sink). The "blocked" arm adds a ``CallbackSink``
whose function never returns (a W&B service or a network filesystem that hangs), with
``sink_detach_after`` longer than the run, so the sink stays stalled, buffering, the whole time.
Arms alternate, paired, so machine drift hits both alike. Printed: the median per-step time of
plain steps and of probe steps in each arm, and their ratios (blocked / none; 1.00 = no cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from overhead import build  # noqa: E402  (the same model as the overhead benchmark; benchmarks/ is on sys.path)

from grokmon import CallbackSink, GrokkingMonitor, MonitorConfig, ProbeSet  # noqa: E402


def run(args: argparse.Namespace, probe: ProbeSet, batch: torch.Tensor, blocked: bool) -> tuple[list, list, list]:
    """Per-step seconds of plain steps and of probe steps; the sink states at the end."""
    hang = threading.Event()
    sinks = [CallbackSink(lambda metrics, step: hang.wait(), name="hung")] if blocked else []
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=args.every, jsonl=False, batch_size=32, baseline=False, sink_timeout=1.0, sink_detach_after=10_000.0),
                              sinks=sinks)
    model = build(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    plain, probing = [], []
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        model.train()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        monitor.step(model, step)
        (probing if step % args.every == 0 else plain).append(time.perf_counter() - start)
    states = [(s.name, s.state, s.delivered, s.queued) for s in monitor.sink_status()]
    start = time.perf_counter()
    monitor.close(timeout=5.0)
    close_seconds = time.perf_counter() - start
    hang.set()
    return plain, probing, states + [("close seconds", round(close_seconds, 2))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--probe", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the stall warning, once per run
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(2, args.vocab, (args.batch, args.seq), generator=g)
    probe = ProbeSet.from_token_ids(torch.randint(2, args.vocab, (args.probe, args.seq), generator=g))
    arms: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    last_states = None
    for r in range(args.repeats):
        for blocked in ((False, True) if r % 2 == 0 else (True, False)):
            plain, probing, states = run(args, probe, batch, blocked)
            arms[blocked][0].extend(plain[1:])  # the first step warms up
            arms[blocked][1].extend(probing)
            if blocked:
                last_states = states
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in arms.items()}
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} model: {args.layers} layers x {args.experts} "
          f"experts top-{args.top_k}, hidden {args.hidden}; batch {args.batch} x {args.seq}; probe {args.probe} x "
          f"{args.seq} every {args.every} steps; {args.steps} steps x {args.repeats} repeats per arm")
    print(f"{'':24}{'no sink':>12}{'blocked sink':>14}{'ratio':>8}")
    for i, what in enumerate(("plain step (ms)", "probe step (ms)")):
        none, hung = med[False][i] * 1e3, med[True][i] * 1e3
        print(f"{what:24}{none:12.1f}{hung:14.1f}{hung / none:8.3f}")
    print(f"blocked sink at the end of its last run (name, state, delivered, queued): {last_states}")


if __name__ == "__main__":
    main()
