"""Training-step time of each rung of the validation ladder (examples/validation/ladder.py), one thread.

    python benchmarks/validation_ladder.py                 # every rung, both families, about 1 minute
    python benchmarks/validation_ladder.py --rungs 0 1 --repeats 5

For each rung and family: the parameter count and the fastest of ``--repeats`` training steps of
the ladder recipe (``div`` with 3 % canaries, batch 256, forward + backward + AdamW), after one
warm-up step. The fastest step is printed because the machine is shared (docs/validation.md gives
the numbers measured with it and the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from examples.validation.families import make_model  # noqa: E402
from examples.validation.ladder import CANARY, FAMILIES, RUNGS  # noqa: E402
from examples.validation.tasks import make_task, vocab_size  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rungs", type=int, nargs="*", default=sorted(RUNGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = make_task("div", 47, 0, canary=CANARY)
    print("rung  family        parameters  ms/step (fastest of", args.repeats, ")")
    for r in args.rungs:
        shape = RUNGS[r]
        for family in FAMILIES:
            model = make_model(family, shape["layers"], vocab_size(47, True), 0, experts=shape["experts"],
                               top_k=shape["top_k"], hidden=shape["hidden"], expert_size=shape["hidden"])
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(0)
            times = []
            for i in range(args.repeats + 1):
                idx = torch.randint(0, len(task.train), (args.batch,), generator=g)
                started = time.perf_counter()
                logits = model(input_ids=task.train.prompts()[idx], logits_to_keep=1).logits[:, -1]
                loss = torch.nn.functional.cross_entropy(logits, task.train.answer[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i:   # the first step warms up
                    times.append(time.perf_counter() - started)
            params = sum(p.numel() for p in model.parameters())
            print(f"{r:4d}  {family:12s}  {params / 1e6:8.2f} M  {1000 * min(times):8.0f}", flush=True)


if __name__ == "__main__":
    main()
