"""What a probe keeps in memory: grokmon's Pathways vs keeping the routers' full logits.

Captures an OLMoE-shaped random model (16 MoE layers, 64 experts, top-8 by default, small hidden so
it runs on a CPU) and measures every tensor the Pathways holds (``nbytes``), in bytes per token per
MoE layer, against the float32 router logits ``[T, L, E]`` a naive monitor would keep. The per-sample
form's storage does not grow with the sequence length; the per-token form keeps int16 expert ids.

    python benchmarks/memory.py
    python benchmarks/memory.py --samples 512 --seq 256 --experts 128 --top-k 8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from capture import build

from grokmon.routing import capture_pathways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build(args.hidden, args.layers, args.experts, args.top_k, 1024, 2 * args.hidden, "cpu", torch.float32)
    ids = torch.randint(2, 1024, (args.samples, args.seq), generator=torch.Generator().manual_seed(0))
    tokens, layers = args.samples * args.seq, args.layers
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}; {layers} MoE layers x "
          f"{args.experts} experts top-{args.top_k}, probe {args.samples} x {args.seq} tokens")
    print(f"{'kept':<44} {'bytes':>12} {'bytes/token/layer':>18}")
    logits = tokens * layers * args.experts * 4
    print(f"{'(naive) float32 router logits [T, L, E]':<44} {logits:>12,} {logits / tokens / layers:>18.2f}")
    for keep_tokens in (False, True):
        p = capture_pathways(model, ids, batch_size=16, keep_token_ids=keep_tokens, compute_loss=False).pathways
        parts = {"mean_weights [N, L, E] float32": p.mean_weights, "expert_counts [L, E] int64": p.expert_counts}
        if keep_tokens:
            parts["token_ids [N, T, L, k] int16"] = p.token_ids
        total = sum(t.nbytes for t in parts.values())
        form = "per-token form" if keep_tokens else "per-sample forms (threshold, top-k)"
        for name, t in parts.items():
            print(f"  {name:<42} {t.nbytes:>12,} {t.nbytes / tokens / layers:>18.3f}")
        print(f"{'= ' + form:<44} {total:>12,} {total / tokens / layers:>18.3f}   "
              f"{logits / total:.0f}x less than the logits")
    rows = p.router_weights
    if rows is not None:
        print(f"{'router weight rows [L, E, H] float32 (once)':<44} {rows.nbytes:>12,} "
              f"{'(per probe, not per token)':>18}")


if __name__ == "__main__":
    main()
