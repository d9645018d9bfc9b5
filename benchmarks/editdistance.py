"""All-pairs edit distance: grokmon's backends vs ``rapidfuzz.process.cdist(workers=-1)``.

Random expert-id sequences (ids ``0..alphabet-1``, all of one length) are compared all-pairs by
``pairwise_edit_distance`` with each backend (torch, triton and auto on CUDA when available) and by a direct
``rapidfuzz.process.cdist`` call on the same sequences in the same run; results are checked equal.
When a backend's estimated full time exceeds ``--max-seconds`` it runs on a random subsample of
the pairs and the full time is extrapolated (marked ``extrapolated``).

    python benchmarks/editdistance.py            # N=1024 and N=4096, length 128
    python benchmarks/editdistance.py --quick    # N=256 and N=512
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
from grokmon.editdistance import pairwise_edit_distance, triton_available  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def bench_size(n: int, length: int, alphabet: int, device: str, max_seconds: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, alphabet, (n, length), generator=gen, dtype=torch.int32)
    lengths = torch.full((n,), length, dtype=torch.int64)
    seqs = ids.tolist()
    reference, ref_s = timed(
        lambda: process.cdist(seqs, seqs, scorer=Levenshtein.distance, workers=-1, dtype=np.int32)
    )
    reference = torch.from_numpy(reference)
    total_pairs = n * (n - 1) // 2
    print(f"\nN={n} length={length} alphabet={alphabet} ({total_pairs} pairs)")
    print(f"  rapidfuzz.process.cdist(workers=-1)      {ref_s:9.3f} s   1.00x")

    runs = [("rapidfuzz", "cpu"), ("auto", "cpu"), ("torch", "cpu")]
    if device == "cuda":
        runs += [("torch", "cuda")] + ([("triton", "cuda")] if triton_available() else []) + [("auto", "cuda")]
    for backend, dev in runs:
        x, lx = ids.to(dev), lengths.to(dev)
        # Warm-up (CUDA context, kernel compilation) of the full-matrix and the pair-list paths.
        pairwise_edit_distance(x[:8], lx[:8], backend=backend)
        warm_pairs = torch.randint(0, 8, (64, 2), generator=torch.Generator().manual_seed(0))
        pairwise_edit_distance(x[:8], lx[:8], warm_pairs.to(dev), backend=backend)
        # Time a sample of pairs first; run everything only if the estimate fits max_seconds.
        sample = min(total_pairs, 20_000)
        pairs = torch.randint(0, n, (sample, 2), generator=gen)
        _, sample_s = timed(lambda: pairwise_edit_distance(x, lx, pairs.to(dev), backend=backend))
        estimate = sample_s * total_pairs / sample
        if estimate <= max_seconds:
            got, secs = timed(lambda: pairwise_edit_distance(x, lx, backend=backend))
            assert torch.equal(got.cpu(), reference), f"{backend} on {dev} disagrees with rapidfuzz"
            note = ""
        else:
            sample = min(total_pairs, max(20_000, int(total_pairs * max_seconds / 4 / estimate)))
            pairs = torch.randint(0, n, (sample, 2), generator=gen)
            got, secs = timed(lambda: pairwise_edit_distance(x, lx, pairs.to(dev), backend=backend))
            assert torch.equal(got.cpu(), reference[pairs[:, 0], pairs[:, 1]])
            secs = secs * total_pairs / sample
            note = f"  extrapolated from {sample} random pairs"
        label = f"pairwise_edit_distance({backend}, {dev})"
        print(f"  {label:40s} {secs:9.3f} s {secs / ref_s:6.2f}x{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--alphabet", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="only N=256 and N=512")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="extrapolate from a pair subsample when a full run would take longer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [256, 512] if args.quick else args.sizes
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    if device == "cuda" and triton_available():
        import triton

        gpu += f", triton {triton.__version__}"
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} torch threads, GPU: {gpu}, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    for n in sizes:
        bench_size(n, args.length, args.alphabet, device, args.max_seconds, args.seed)


if __name__ == "__main__":
    main()
