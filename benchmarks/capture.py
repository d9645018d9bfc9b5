"""Cost of a grokmon probe: capture_pathways vs a plain no_grad forward of the same tokens.

OLMoE-shaped random model (default: 16 layers, 64 experts, top-8, hidden 256 so it runs on a small
CPU in about a minute). Both sides run in eval mode with ``use_cache=False`` and ``logits_to_keep=1``
on the same batch; the ratio of medians is printed, with the probe loss on and off.

    python benchmarks/capture.py                        # CPU-sized default
    python benchmarks/capture.py --full                 # OLMoE-1B-7B shape (GPU: hidden 2048, 16 layers)
    python benchmarks/capture.py --hidden 512 --seq 256 --samples 16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import transformers as tf

from grokmon.routing import capture_pathways


def build(hidden: int, layers: int, experts: int, top_k: int, vocab: int, inter: int, device, dtype):
    config = tf.OlmoeConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
        num_experts=experts, num_experts_per_tok=top_k, max_position_embeddings=4096,
        pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )
    torch.manual_seed(0)
    return tf.OlmoeForCausalLM(config).to(device=device, dtype=dtype).eval()


def timed(fn, repeats: int, device) -> list[float]:
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--inter", type=int, default=None, help="expert FFN width (default hidden/2, OLMoE: 1024)")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="OLMoE-1B-7B shape: hidden 2048, inter 1024, bf16 on CUDA")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.float32
    if args.full:
        args.hidden, args.inter, args.layers, args.experts, args.top_k = 2048, 1024, 16, 64, 8
        args.samples, args.seq = max(args.samples, 32), max(args.seq, 512)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    inter = args.inter or max(32, args.hidden // 2)
    model = build(args.hidden, args.layers, args.experts, args.top_k, args.vocab, inter, device, dtype)
    ids = torch.randint(2, args.vocab, (args.samples, args.seq), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    params = sum(p.numel() for p in model.parameters())
    print(f"device={device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads) "
          f"torch={torch.__version__} transformers={tf.__version__}")
    print(f"OLMoE-shaped: hidden={args.hidden} inter={inter} layers={args.layers} experts={args.experts} "
          f"top_k={args.top_k} vocab={args.vocab} params={params / 1e6:.1f}M dtype={dtype}; "
          f"batch={args.samples}x{args.seq} tokens, {args.repeats} repeats, median")

    def plain():
        with torch.no_grad():
            model(ids, attention_mask=mask, use_cache=False, logits_to_keep=1)

    def plain_loss():  # what a probe loss costs without grokmon: full logits, then the CE
        with torch.no_grad():
            logits = model(ids, attention_mask=mask, use_cache=False).logits.float()
            torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def probe(loss: bool):
        return lambda: capture_pathways(model, ids, mask, batch_size=args.samples, compute_loss=loss)

    runs = {"plain": plain, "plain_loss": plain_loss, "capture": probe(False), "capture_loss": probe(True)}
    for fn in runs.values():  # warm-up
        fn()
    # interleave them so drift in machine speed hits all alike
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name] += timed(fn, 1, device)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"plain no_grad forward (logits_to_keep=1):      {med['plain'] * 1e3:9.1f} ms")
    print(f"capture, compute_loss=False:                   {med['capture'] * 1e3:9.1f} ms   "
          f"ratio {med['capture'] / med['plain']:.3f}x vs plain")
    print(f"plain forward, full logits + CE:               {med['plain_loss'] * 1e3:9.1f} ms")
    print(f"capture, compute_loss=True:                    {med['capture_loss'] * 1e3:9.1f} ms   "
          f"ratio {med['capture_loss'] / med['plain_loss']:.3f}x vs full-logits loss, "
          f"{med['capture_loss'] / med['plain']:.3f}x vs plain")


if __name__ == "__main__":
    main()
