"""Tasks of the validation matrix: modular arithmetic as 5-token sequences ``[a, op, b, =, c]``.

Every task shares one vocabulary (numbers ``0..p-1``, one operator token per operation, ``=``),
so one model can learn several tasks at once, told apart by the operator token (the multi-domain
mixture, the paper's "local, asynchronous grokking"). Only ``c`` is supervised.

* ``add``, ``sub``, ``div`` (``a * b^-1``, b != 0), ``quad`` (``a^2 + ab + b^2``, not a group
  operation);
* ``mix``: add, sub and div in one model, each with its own train fraction;
* ``rand``: the add inputs with labels drawn at random once (memorizable, never generalizable):
  the negative control.

``canary=0.03`` adds a within-run control to any task: a ``canary`` domain of random-label pairs
(3 % of the training set's size, as many held out) under a token of its own, ``[a, #, b, =, c]``
with ``#`` the canary token after ``=`` (so a run without canaries keeps the old vocabulary).

Example:
    >>> t = make_task("div", p=7, seed=0)
    >>> t.train.ids.shape[1], sorted(t.domains), round(len(t.train) / (len(t.train) + len(t.held)), 1)
    (5, ['div'], 0.4)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPS = ("add", "sub", "div", "quad", "rand")
#: train fraction per domain (the mixture's fractions differ so its domains grok at different times)
TRAIN_FRACTION = {"add": 0.4, "sub": 0.4, "div": 0.4, "quad": 0.4, "rand": 0.4}
MIX_FRACTIONS = {"add": 0.5, "sub": 0.4, "div": 0.3}
TASKS = ("add", "sub", "div", "quad", "mix", "rand")
CONTROL_TASKS = ("rand",)


def vocab_size(p: int, canary: bool = False) -> int:
    return p + len(OPS) + 1 + int(canary)


def canary_token(p: int) -> int:
    return p + len(OPS) + 1


def op_token(p: int, op: str) -> int:
    return p + OPS.index(op)


def eq_token(p: int) -> int:
    return p + len(OPS)


@dataclass
class Split:
    """``ids [n, 5]`` (``c`` last), ``answer [n]``, ``domain [n]`` (index into the task's domains)."""

    ids: torch.Tensor
    answer: torch.Tensor
    domain: torch.Tensor

    def __len__(self) -> int:
        return len(self.answer)

    def prompts(self) -> torch.Tensor:
        return self.ids[:, :-1]


@dataclass
class Task:
    name: str
    p: int
    domains: tuple[str, ...]
    train: Split
    held: Split


def _answers(op: str, a: torch.Tensor, b: torch.Tensor, p: int, seed: int) -> torch.Tensor:
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "div":
        inv = torch.tensor([pow(int(x), p - 2, p) for x in b])
        return (a * inv) % p
    if op == "quad":
        return (a * a + a * b + b * b) % p
    if op == "rand":
        return torch.randint(0, p, a.shape, generator=torch.Generator().manual_seed(10_000 + seed))
    raise ValueError(f"unknown op {op!r}")


def _domain(op: str, p: int, fraction: float, seed: int, index: int) -> tuple[Split, Split]:
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    if op == "div":
        a, b = a[b != 0], b[b != 0]
    c = _answers(op, a, b, p, seed)
    token = op_token(p, op)
    ids = torch.stack([a, torch.full_like(a, token), b, torch.full_like(a, eq_token(p)), c], dim=1)
    order = torch.randperm(len(a), generator=torch.Generator().manual_seed(seed * 100 + index))
    cut = round(fraction * len(a))
    dom = torch.full((len(a),), index)
    tr, he = order[:cut], order[cut:]
    return Split(ids[tr], c[tr], dom[tr]), Split(ids[he], c[he], dom[he])


def _canaries(p: int, count: int, seed: int, index: int) -> tuple[Split, Split]:
    """``count`` train and ``count`` held-out pairs with random labels under the canary token."""
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    g = torch.Generator().manual_seed(20_000 + seed)
    order = torch.randperm(len(a), generator=g)[:2 * count]
    a, b = a[order], b[order]
    c = torch.randint(0, p, a.shape, generator=g)
    ids = torch.stack([a, torch.full_like(a, canary_token(p)), b, torch.full_like(a, eq_token(p)), c], dim=1)
    dom = torch.full((len(a),), index)
    return Split(ids[:count], c[:count], dom[:count]), Split(ids[count:], c[count:], dom[count:])


def make_task(name: str, p: int = 47, seed: int = 0, canary: float = 0.0,
              fraction: float | None = None) -> Task:
    """The train / held-out split of task ``name`` (one of :data:`TASKS`).

    ``canary``: share of the training set added as a ``canary`` domain (random labels, own token);
    ``fraction``: train fraction of a single-task run (default :data:`TRAIN_FRACTION`).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; use one of {TASKS}")
    if not 0.0 <= canary < 0.5:
        raise ValueError(f"canary is a share of the training set, 0 <= canary < 0.5; got {canary}")
    fractions = MIX_FRACTIONS if name == "mix" else {name: TRAIN_FRACTION[name] if fraction is None else fraction}
    parts = [_domain(op, p, f, seed, i) for i, (op, f) in enumerate(fractions.items())]
    domains = tuple(fractions)
    if canary:
        count = max(2, round(canary * sum(len(tr) for tr, _ in parts)))
        parts.append(_canaries(p, count, seed, len(parts)))
        domains += ("canary",)

    def cat(splits: list[Split]) -> Split:
        return Split(*(torch.cat([getattr(s, f) for s in splits]) for f in ("ids", "answer", "domain")))

    return Task(name, p, domains, cat([tr for tr, _ in parts]), cat([he for _, he in parts]))
