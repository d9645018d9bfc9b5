"""Training-step time of each rung of the validation ladder (examples/validation/ladder.py), one thread.

    python benchmarks/validation_ladder.py                 # every rung, both families, about 2 minutes
    python benchmarks/validation_ladder.py --rungs 0 1 --repeats 9

For each rung and family: the parameter count, the fastest and the median of ``--repeats``
training steps of the ladder recipe (``div`` with 3 % canaries, batch 256, forward + backward +
AdamW) after two warm-up steps, and the median's ratio to rung 0's (the baseline of the same run).
On a shared machine the fastest step is the closest to the step's own cost and the median to what
a cell sees; a wide gap between them says the machine was busy (docs/validation.md gives the
numbers measured with it and the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from examples.validation.families import make_model  # noqa: E402
from examples.validation.ladder import CANARY, FAMILIES, RUNGS  # noqa: E402
from examples.validation.tasks import make_task, vocab_size  # noqa: E402


WARM_UP = 2  # steps not timed: the first allocations and AdamW's state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rungs", type=int, nargs="*", default=sorted(RUNGS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = make_task("div", 47, 0, canary=CANARY)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    rungs = sorted(set(args.rungs))   # the smallest rung first: it is the baseline of the ratios
    if not rungs:
        parser.error(f"--rungs needs at least one of {sorted(RUNGS)}")
    print(f"rung  family        parameters  ms/step: fastest  median of {args.repeats}  median / rung {rungs[0]}'s")
    baseline: dict[str, float] = {}
    for r in rungs:
        shape = RUNGS[r]
        for family in FAMILIES:
            model = make_model(family, shape["layers"], vocab_size(47, True), 0, experts=shape["experts"],
                               top_k=shape["top_k"], hidden=shape["hidden"], expert_size=shape["hidden"])
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(0)
            times = []
            for i in range(args.repeats + WARM_UP):
                idx = torch.randint(0, len(task.train), (args.batch,), generator=g)
                started = time.perf_counter()
                logits = model(input_ids=task.train.prompts()[idx], logits_to_keep=1).logits[:, -1]
                loss = torch.nn.functional.cross_entropy(logits, task.train.answer[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i >= WARM_UP:
                    times.append(time.perf_counter() - started)
            params = sum(p.numel() for p in model.parameters())
            median = statistics.median(times)
            ratio = median / baseline.setdefault(family, median)
            print(f"{r:4d}  {family:12s}  {params / 1e6:8.2f} M  {1000 * min(times):16.0f}  {1000 * median:11.0f}"
                  f"  {ratio:16.1f}x", flush=True)


if __name__ == "__main__":
    main()
