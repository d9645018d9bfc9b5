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

from grokmon import GrokkingMonitor, ProbeSet  # noqa: E402


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
    off, on, blocked = [], [], []
    for _ in range(args.repeats):  # interleaved so drift in machine speed hits both alike
        off.append(train(build(args), args.steps, batch, None)[0])
        monitor = GrokkingMonitor(probe, every=args.every, jsonl=False, batch_size=32)
        seconds, b = train(build(args), args.steps, batch, monitor)
        monitor.close()
        on.append(seconds)
        blocked += b
    model = build(args).eval()
    forward = []
    for _ in range(5):
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(0, args.probe, 32):
                model(input_ids=probe.input_ids[i:i + 32].to(args.device), use_cache=False, logits_to_keep=1)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        forward.append(time.perf_counter() - t)
    t_off, t_on, t_fwd = statistics.median(off), statistics.median(on), statistics.median(forward)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"model: {args.layers} layers x {args.experts} experts top-{args.top_k}, hidden {args.hidden}")
    print(f"{args.steps} steps, probe every {args.every} ({args.probe} x {args.seq} tokens)")
    print(f"  training without monitor: {t_off:.2f} s   with: {t_on:.2f} s   throughput ratio {t_off / t_on:.3f}")
    if blocked:
        t_block = statistics.median(blocked)
        print(f"  loop blocked per probe: {t_block * 1000:.1f} ms   plain no-grad forward of the probe: "
              f"{t_fwd * 1000:.1f} ms   ratio {t_block / t_fwd:.2f}x")


if __name__ == "__main__":
    main()
