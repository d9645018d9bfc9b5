"""Fixtures shared by the test files: offline hubs, a tiny MoE model, a probe, a monitor factory.

The helpers behind them are plain functions in ``moe_models.py`` (``tiny_model``,
``random_probe``), which tests and the subprocesses they start import by bare name.

Example:
    >>> def test_probe_once(make_monitor, olmoe):               # doctest: +SKIP
    ...     monitor = make_monitor(every=1)
    ...     monitor.step(olmoe, 1)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# GROKMON_TEST_HIDE=tensorboard,matplotlib,...: those packages import as if not installed (``import`` raises
# ModuleNotFoundError, ``importlib.util.find_spec`` gives None), so that scripts/test.sh proves every test that
# needs one skips, with the install line, where it is missing.
HIDDEN = [name for name in os.environ.get("GROKMON_TEST_HIDE", "").split(",") if name]
for _name in HIDDEN:
    if any(m == _name or m.startswith(_name + ".") for m in sys.modules):
        raise RuntimeError(f"GROKMON_TEST_HIDE: {_name} was imported before tests/conftest.py; it cannot be hidden")
    sys.modules[_name] = None  # type: ignore[assignment]

from moe_models import build_monitor, random_probe, tiny_model  # noqa: E402

#: Set by scripts/test.sh to the environment it tests ("core", "engines"): there every test must run,
#: so a skip fails, unless it is for what no CI machine has (a CUDA device; Chromium where it cannot be installed).
STRICT_ENV = os.environ.get("GROKMON_TEST_ENV", "")
ALLOWED_SKIPS = ("CUDA", "Chromium")


def _skip_is_a_failure(report: Any, gpu_test: bool) -> str | None:
    """Why a skip ``report`` must fail here, or None. A GPU or Chromium skip never does. In a strict
    environment every other test must run; with packages hidden, every other skip must give the install line."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if gpu_test or any(word in reason for word in ALLOWED_SKIPS):
        return None
    if HIDDEN and "pip install" not in reason:
        return f"skipped without the install line: {reason}\nuse optional.need(module) (tests/optional.py)"
    if STRICT_ENV:
        return (f"skipped in the {STRICT_ENV!r} test environment, where every test must run: {reason}\n"
                "install what it needs in scripts/test.sh, or mark it `engine` if it needs a training engine")
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A skip that must fail here (``_skip_is_a_failure``) is reported as a failure."""
    report = (yield).get_result()
    why = _skip_is_a_failure(report, item.get_closest_marker("gpu") is not None)
    if why:
        report.outcome, report.longrepr = "failed", why


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped at import: a collection error."""
    report = (yield).get_result()
    why = _skip_is_a_failure(report, False)
    if why:
        report.outcome, report.longrepr = "failed", why


@pytest.fixture(scope="session")
def wandb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where W&B runs without a ``dir=`` write: a temporary folder, never the repository."""
    return tmp_path_factory.mktemp("wandb")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, wandb_dir: Path) -> None:
    """No test reaches the Hugging Face Hub or W&B servers, nor writes a ``wandb/`` folder into the repository."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))


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
