"""Fixtures shared by the test files: offline hubs, a tiny MoE model, a probe, a monitor factory.

The helpers behind them are plain functions in ``moe_models.py`` (``tiny_model``,
``random_probe``), which tests and the subprocesses they start import by bare name.

Example:
    >>> def test_probe_once(make_monitor, olmoe):               # doctest: +SKIP
    ...     monitor = make_monitor(every=1)
    ...     monitor.step(olmoe, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moe_models import build_monitor, random_probe, tiny_model


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the Hugging Face Hub or W&B servers."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def olmoe() -> Any:
    """A tiny OLMoE (seed 4), shared by the tests of one module: do not train it."""
    return tiny_model("olmoe", seed=4)


@pytest.fixture
def probe() -> Any:
    """8 random samples of 12 tokens, groups ``a`` and ``b`` (``random_probe()``)."""
    return random_probe()


@pytest.fixture
def make_monitor(tmp_path, probe) -> Iterator[Callable[..., Any]]:
    """``make_monitor(**fields)``: a GrokkingMonitor of ``probe`` writing under ``tmp_path``, closed after the test.

    Keywords are :class:`~grokmon.MonitorConfig` fields, plus the monitor's live arguments (``probe``,
    ``sinks``, ``alerts``, ``stage_tracker``, ``accelerator``, ``on_alert``): ``moe_models.build_monitor``.
    """
    made = []

    def make(**fields: Any) -> Any:
        fields.setdefault("output_dir", tmp_path)
        made.append(build_monitor(fields.pop("probe", probe), **fields))
        return made[-1]

    yield make
    for monitor in made:
        monitor.close()


@pytest.fixture
def word_tokenizer(tmp_path) -> list[str]:
    """A real word-level tokenizer saved to ``tmp_path / "tok"`` (words ``w0``..``w39``); returns the words."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(40)]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    return words
