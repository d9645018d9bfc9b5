"""A tiny grokking task for a real MoE architecture (OLMoE), trainable on one CPU core.

Modular arithmetic ``c = a (op) b mod p`` as a 4-token causal-LM sequence
``[a, b, =, c]`` (one task per model, so no operator token) whose only supervised token is ``c`` (labels are -100
elsewhere), so the standard Hugging Face shifted loss predicts ``c`` from the
``=`` position.  A random-init :class:`transformers.OlmoeForCausalLM` trained
on a fraction of all ``p*p`` pairs with AdamW and large weight decay first
memorizes the training pairs and only much later generalizes to the held-out
pairs (grokking).  ``RECIPE`` holds the measured settings (see
docs/validation.md, "Grokking recipe").

Reused by the HF-Trainer demo: ``make_dataset``, ``make_model``, ``RECIPE``,
``accuracy``.  ``train_plain`` is a fast full-batch loop for experiments.

Example:
    >>> import torch; torch.set_num_threads(1)
    >>> train, held = make_dataset(p=7, op="add", train_frac=0.5, seed=0)
    >>> len(train) + len(held) == 49 and train[0]["input_ids"].shape == (4,)
    True
    >>> model = make_model(p=7, seed=0)
    >>> 0.0 <= accuracy(model, held) <= 1.0
    True
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

OPS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
}
COMMUTATIVE = {"add", "mul"}

#: Settings measured to memorize well before generalizing (docs/validation.md, "Grokking recipe").
#: ``decay_norms=True`` matters: if RMSNorm gains escape weight decay (the HF Trainer default)
#: they rescale the decayed matrices back and held-out accuracy stays flat for 5000+ steps.
#: Use ``make_optimizer`` with ``Trainer(optimizers=...)`` to get the same optimizer.
RECIPE: dict[str, Any] = {
    "p": 47,
    "op": "add",
    "split": "random",
    "train_frac": 0.4,
    "lr": 3e-3,
    "weight_decay": 1.0,
    "decay_norms": True,
    "betas": (0.9, 0.98),
    "warmup_steps": 10,  # linear warmup, then constant lr
    "max_steps": 5000,
    "batch_size": None,  # None = full batch
    "eval_every": 25,
    "model": {"hidden_size": 64, "intermediate_size": 128},  # overrides for make_model
}


def _eq_id(p: int) -> int:
    """Token id of '=' (numbers use ids 0..p-1)."""
    return p


class ArithmeticDataset(Dataset):
    """Rows of ``{"input_ids", "labels", "attention_mask"}`` (each a LongTensor of length 4).

    ``a``, ``b``, ``c`` hold the operands and answers as tensors for fast full-batch use.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, p: int) -> None:
        self.a, self.b, self.c, self.p = a, b, c, p
        self.input_ids = torch.stack([a, b, torch.full((len(a),), _eq_id(p)), c], dim=1)
        self.labels = torch.full_like(self.input_ids, -100)
        self.labels[:, -1] = c
        self.attention_mask = torch.ones_like(self.input_ids)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[i],
            "labels": self.labels[i],
            "attention_mask": self.attention_mask[i],
        }

    def prompts(self) -> torch.Tensor:
        """``[a, b, =]`` for every row: the model's answer is the next token."""
        return self.input_ids[:, :-1]


def make_dataset(
    p: int = 47, op: str = "add", train_frac: float = 0.4, seed: int = 0, split: str = "random"
) -> tuple[ArithmeticDataset, ArithmeticDataset]:
    """Split all ``p*p`` pairs ``(a, b)`` at random into (train, held-out) datasets.

    ``split="random"`` splits ordered pairs (classic grokking setup; for commutative ops the
    model then gets ~``train_frac`` of held-out right by symmetry alone, the swap being in
    train).  ``split="unordered"`` keeps ``(a, b)`` and ``(b, a)`` on the same side for
    ``add``/``mul`` (held-out starts near 0, but grokking needs more steps); the train share
    is then ``train_frac`` only in expectation.

    >>> tr, he = make_dataset(5, "sub", 0.6, seed=1)
    >>> (len(tr), len(he))
    (15, 10)
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; use one of {sorted(OPS)}")
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    c = OPS[op](a, b, p)
    if split not in ("random", "unordered"):
        raise ValueError(f"unknown split {split!r}; use 'random' or 'unordered'")
    unordered = split == "unordered" and op in COMMUTATIVE
    group = torch.minimum(a, b) * p + torch.maximum(a, b) if unordered else a * p + b
    g = torch.Generator().manual_seed(seed)
    rank = torch.empty(p * p, dtype=torch.long)
    rank[torch.randperm(p * p, generator=g)] = torch.arange(p * p)
    in_train = rank[group] < round(train_frac * p * p)
    tr, he = in_train.nonzero().squeeze(1), (~in_train).nonzero().squeeze(1)
    return ArithmeticDataset(a[tr], b[tr], c[tr], p), ArithmeticDataset(a[he], b[he], c[he], p)


def make_model(p: int = 47, seed: int = 0, **overrides: Any):
    """A random-init ``OlmoeForCausalLM`` sized for the task (vocab = p numbers + '=').

    Keyword overrides go into ``OlmoeConfig`` (e.g. ``num_experts=8``).

    >>> m = make_model(7, seed=0, hidden_size=32)
    >>> m.config.vocab_size, m.config.hidden_size
    (8, 32)
    """
    from transformers import OlmoeConfig, OlmoeForCausalLM

    cfg: dict[str, Any] = dict(
        vocab_size=p + 1,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        max_position_embeddings=8,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
        use_cache=False,
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    return OlmoeForCausalLM(OlmoeConfig(**cfg))


def _answer_logits(model, prompts: torch.Tensor) -> torch.Tensor:
    """Logits for the next token after each prompt (the answer position)."""
    return model(input_ids=prompts, logits_to_keep=1).logits[:, -1, :]


@torch.no_grad()
def accuracy(model, dataset: ArithmeticDataset, batch_size: int = 4096) -> float:
    """Fraction of rows whose argmax answer-position prediction equals ``c`` (eval mode).

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    prompts, c = dataset.prompts(), dataset.c
    correct = 0
    for i in range(0, len(c), batch_size):
        logits = _answer_logits(model, prompts[i : i + batch_size])
        correct += int((logits.argmax(-1) == c[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(c), 1)


def param_groups(
    model: torch.nn.Module, weight_decay: float, decay_norms: bool = False
) -> list[dict[str, Any]]:
    """AdamW groups: decay everything except biases and norm weights (unless ``decay_norms``).

    This mirrors the Hugging Face Trainer's default split, so a recipe tuned with
    ``train_plain`` transfers to ``Trainer(args=TrainingArguments(weight_decay=...))``.

    >>> groups = param_groups(make_model(7, hidden_size=32), 1.0)
    >>> [g["weight_decay"] for g in groups]
    [1.0, 0.0]
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        exempt = not decay_norms and ("norm" in name.lower() or "bias" in name.lower())
        (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: torch.nn.Module, recipe: dict[str, Any] | None = None
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + linear-warmup-then-constant schedule from ``recipe`` (default ``RECIPE``).

    Pass the pair to ``transformers.Trainer(optimizers=...)`` to train exactly like ``train_plain``.

    >>> opt, sched = make_optimizer(make_model(7, hidden_size=32))
    >>> opt.param_groups[0]["lr"] == RECIPE["lr"] / RECIPE["warmup_steps"]
    True
    """
    r = {**RECIPE, **(recipe or {})}
    opt = torch.optim.AdamW(
        param_groups(model, r["weight_decay"], r.get("decay_norms", False)),
        lr=r["lr"],
        betas=tuple(r["betas"]),
    )
    warm = max(int(r.get("warmup_steps", 0)), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    return opt, sched


def train_plain(
    recipe: dict[str, Any] | None = None,
    seed: int = 0,
    callback: Callable[[int, Any, dict[str, float]], None] | None = None,
    stop_when_grokked: float | None = None,
) -> list[tuple[int, float, float, float]]:
    """Train ``make_model`` on ``make_dataset`` with AdamW, full batch by default.

    Returns the history ``[(step, train_loss, train_acc, heldout_acc), ...]`` recorded every
    ``recipe["eval_every"]`` steps.  ``callback(step, model, row_dict)`` runs at each record.
    ``stop_when_grokked`` (e.g. 0.99) ends the run once held-out accuracy reaches it.

    >>> import torch; torch.set_num_threads(1)
    >>> h = train_plain({**RECIPE, "p": 7, "max_steps": 4, "eval_every": 2})
    >>> [row[0] for row in h]
    [0, 2, 4]
    """
    r = {**RECIPE, **(recipe or {})}
    train, held = make_dataset(r["p"], r["op"], r["train_frac"], seed, r.get("split", "random"))
    model = make_model(r["p"], seed, **r.get("model", {}))
    model.train()
    opt, sched = make_optimizer(model, r)
    prompts, c = train.prompts(), train.c
    n, bs = len(c), r.get("batch_size") or len(c)
    g = torch.Generator().manual_seed(seed + 1)
    history: list[tuple[int, float, float, float]] = []
    t0 = time.perf_counter()
    loss_val = float("nan")
    for step in range(r["max_steps"] + 1):
        if step % r["eval_every"] == 0 or step == r["max_steps"]:
            row = (step, loss_val, accuracy(model, train), accuracy(model, held))
            history.append(row)
            if callback is not None:
                callback(step, model, {"step": step, "train_loss": row[1], "train_acc": row[2],
                                       "heldout_acc": row[3], "time_s": time.perf_counter() - t0})
            if stop_when_grokked is not None and row[3] >= stop_when_grokked:
                break
        if step == r["max_steps"]:
            break
        idx = torch.randperm(n, generator=g)[:bs] if bs < n else slice(None)
        logits = _answer_logits(model, prompts[idx])
        loss = torch.nn.functional.cross_entropy(logits.float(), c[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
    return history


def milestones(
    history: Sequence[tuple[int, float, float, float]],
) -> dict[str, int | None]:
    """First steps where train acc hit 1.0 and held-out acc hit 0.5 / 0.9 (None if never).

    >>> milestones([(0, 1.0, 0.1, 0.0), (10, 0.1, 1.0, 0.2), (20, 0.0, 1.0, 0.95)])
    {'train_1.0': 10, 'heldout_0.5': 20, 'heldout_0.9': 20}
    """

    def first(col: int, thr: float) -> int | None:
        return next((row[0] for row in history if row[col] >= thr), None)

    return {"train_1.0": first(2, 1.0), "heldout_0.5": first(3, 0.5), "heldout_0.9": first(3, 0.9)}
