"""The error catalogue (docs/errors.md): every catalogued bad input raises its type and message.

The cases live by area in ``tests/catalogue/<area>.py`` (routing, probe, monitor, engines, metrics,
alerts, sinks, cli, report), registered with ``@case`` in one registry (``catalogue.CASES``); this
file runs them all and checks them against the page. Every row of the page's tables (all but the
table of error types) names at least one case of ``CASES`` as
``tests/test_error_catalogue.py::test_error[<id>]``; it may name an older test in
another file as well, but the case is what checks the row. A case builds a tiny bad input and must
raise ``exception`` with ``fragment`` in its message:

* ``fragment`` is literal text, except that ``...`` stands for any text: ``"no probe file at
  ...: save one"`` checks the two parts, in this order. The row's message cell must show the
  same parts in the same order, so the page quotes what the code says.
* ``exception`` is an exception type (``pytest.raises``; it must be a ``GrokmonError``), or a
  ``Warning`` subclass for the few rows where grokmon warns and goes on (``pytest.warns``: the
  category and the message are checked the same way).

``test_docs_rows_show_each_case_type_and_message`` fails for a row without a case, for a case without a row,
and for a row that does not show its cases' type and message, so page and code cannot drift apart.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from catalogue import CASES, GPU_ONLY
from catalogue.inputs import llama, tiny_probe
from grokmon.config import MonitorConfig
from grokmon.errors import ConfigError, GrokmonError, ProbeError, RouterNotFoundError, RoutingError, SinkError

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"
THIS = Path(__file__).resolve()


# ---------------------------------------------------------------------------- tests


#: Cases that need a training engine installed: marked ``engine``, they run in .venv-engines.
ENGINE_CASES = {"engine-olmo-core-not-a-monitor", "engine-olmo-core-probe-too-long", "engine-olmo-core-config-no-probe"}


def _params() -> list:
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices (CPU and CUDA)")
    return [pytest.param(c, id=c, marks=([pytest.mark.gpu, skip] if c in GPU_ONLY else [])
                         + ([pytest.mark.engine] if c in ENGINE_CASES else [])) for c in CASES]


def _parts(fragment: str) -> list[str]:
    """The literal parts of a fragment; ``...`` between them stands for any text."""
    return [part.strip() for part in fragment.split("...") if part.strip()]


def _pattern(fragment: str) -> str:
    return ".*".join(re.escape(part) for part in _parts(fragment))


def _shows_in_order(parts: list[str], text: str) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


@pytest.mark.parametrize("case_id", _params())
def test_error(case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exception, fragment, trigger = CASES[case_id]
    pattern = re.compile(_pattern(fragment), re.DOTALL)
    if issubclass(exception, Warning):
        with pytest.warns(exception) as caught:
            trigger(tmp_path, monkeypatch)
        messages = [str(w.message) for w in caught if issubclass(w.category, exception)]
        assert any(pattern.search(m) for m in messages), f"no {exception.__name__} matches {fragment!r}: {messages}"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exception, match=pattern) as info:
            trigger(tmp_path, monkeypatch)
    assert isinstance(info.value, GrokmonError), "grokmon's own checks raise GrokmonError subclasses"


def test_fragments_are_literal_where_they_say_so() -> None:
    assert _parts("no probe file at ...: save one") == ["no probe file at", ": save one"]
    assert re.search(_pattern("a (b) ... c."), "a (b) x y c.") and not re.search(_pattern("a (b) ... c."), "a b x c.")
    assert _shows_in_order(["a", "c"], "a b c") and not _shows_in_order(["c", "a"], "a b c")
    assert all(_parts(fragment) for _, fragment, _ in CASES.values()), "a fragment of only '...' checks nothing"


def test_cli_bad_input_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from grokmon.cli import main

    (tmp_path / "corpus.txt").write_text("one sample\nanother sample\n")
    code = main(["probe", str(tmp_path / "corpus.txt"), "--tokenizer", str(tmp_path / "no-tokenizer"),
                 "--out", str(tmp_path / "probe.pt"), "--n", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("grokmon: error: cannot load the tokenizer") and "Traceback" not in err


def test_monitor_problem_warns_and_counts_unless_on_error_raise(tmp_path: Path) -> None:
    """The rule of docs/errors.md: during training a monitor problem warns and counts; it raises
    only with ``on_error="raise"``. Here: a model without MoE routers."""
    from grokmon.monitor import GrokkingMonitor

    monitor = GrokkingMonitor(tiny_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    model = llama()
    with pytest.warns(RuntimeWarning, match=r"grokmon: probe failed, training goes on \(counted in grokmon/errors\)"):
        metrics = monitor.step(model, 1)  # training goes on; no metric of this probe is a number
    assert not any(v == v for k, v in metrics.items() if k.endswith("pathway_distance"))
    assert monitor.errors == 1
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        monitor.step(model, 2)  # counted every time, warned once per place
    assert not [w for w in again if "probe failed" in str(w.message)]
    assert monitor.errors == 2
    monitor.close()
    strict = GrokkingMonitor(tiny_probe(), MonitorConfig(every=1, jsonl=False, on_error="raise"))
    with pytest.raises(RouterNotFoundError, match="register_router"):
        strict.step(model, 1)
    assert strict.errors == 1
    strict.close()


def test_error_types_form_one_hierarchy() -> None:
    import grokmon.errors as errors

    kinds = [RouterNotFoundError, RoutingError, ProbeError, ConfigError, SinkError]
    assert all(issubclass(k, GrokmonError) for k in kinds)
    assert issubclass(ProbeError, ValueError) and issubclass(ConfigError, ValueError)
    public = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, GrokmonError)}
    text = DOC.read_text()
    for name in public:
        assert f"`{name}`" in text, f"docs/errors.md does not describe {name}"


# ---------------------------------------------------------------------------- the page cannot rot

_TEST_REF = re.compile(r"`(tests/[\w/.-]+\.py)::(\w+)(?:\[([^\]`]+)\])?`")


def _doc_refs(text: str) -> list[tuple[str, str, str | None]]:
    return [(m[1], m[2], m[3]) for m in _TEST_REF.finditer(text)]


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each markdown table of the page: (header cells, data rows)."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    rows: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if rows:
            tables.append((rows[0], [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]))
            rows = []
    return tables


TYPES_HEADER = ["type", "base classes", "raised when"]
ROWS_HEADER = ["bad input", "exception", "message (abridged)", "test"]


def _catalogue_rows() -> list[list[str]]:
    tables = _tables(DOC.read_text())
    headers = [header for header, _ in tables]
    assert headers.count(TYPES_HEADER) == 1, "docs/errors.md has one table of error types"
    others = [header for header in headers if header != TYPES_HEADER]
    assert others and all(h == ROWS_HEADER for h in others), f"every other table has the columns {ROWS_HEADER}"
    return [row for header, rows in tables if header == ROWS_HEADER for row in rows]


def test_docs_table_names_existing_tests() -> None:
    text = DOC.read_text()
    refs = _doc_refs(text)
    assert len(refs) >= len(CASES), "docs/errors.md names fewer tests than the catalogue has cases"
    for path, name, param in refs:
        file = ROOT / path
        assert file.is_file(), f"docs/errors.md names {path}, which does not exist"
        assert re.search(rf"^\s*def {name}\(", file.read_text(), re.MULTILINE), f"{path} has no test {name}"
        if file.resolve() == THIS and param is not None:
            assert param in CASES, f"docs/errors.md names case {param!r}, which {path} does not define"
    named = {param for path, _, param in refs if (ROOT / path).resolve() == THIS}
    missing = sorted(set(CASES) - named)
    assert not missing, f"cases not in docs/errors.md: {missing}"


def _case_refs(cells: list[str]) -> list[str]:
    return [param for path, name, param in _doc_refs(" ".join(cells))
            if (ROOT / path).resolve() == THIS and name == "test_error" and param is not None]


def test_docs_rows_show_each_case_type_and_message() -> None:
    """Every catalogue row names a case, and shows each of its cases' type and message."""
    seen: list[str] = []
    rows = _catalogue_rows()
    assert len(rows) >= len(CASES) // 2
    for cells in rows:
        assert len(cells) == 4, f"a catalogue row has 4 cells (input, type, message, test): {cells}"
        params = _case_refs(cells)
        assert params, (f"the row {cells[0]!r} names no tests/test_error_catalogue.py::test_error[<id>] case: add "
                        "a case that triggers it and asserts its type and message")
        for param in params:
            assert param in CASES, f"docs/errors.md names case {param!r}, which this file does not define"
            exception, fragment, _ = CASES[param]
            assert f"`{exception.__name__}`" in cells[1], f"row of {param} must name {exception.__name__}"
            assert _shows_in_order(_parts(fragment), cells[2].replace("`", "")), \
                f"row of {param} must quote {fragment!r} (parts in order)"
        seen += params
    assert sorted(seen) == sorted(set(seen)), "each case checks one row"
    assert set(seen) == set(CASES), f"cases without a row: {sorted(set(CASES) - set(seen))}"
