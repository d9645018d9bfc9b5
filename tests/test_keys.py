"""The metric-key prefix has one owner (grokmon/keys.py): every writer and reader goes through it.

A configurable prefix used to reach the JSONL record while the readers (``read_metrics``, the
report, the rules, the W&B charts, the plots) kept ``"grokmon/"`` hard-coded, so a run with
``prefix="moe/"`` gave a report with no curves, silently. The prefix is now fixed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from moe_models import tiny_model

from grokmon import MonitorConfig, PlateauRule, read_metrics
from grokmon.errors import ConfigError
from grokmon.keys import DIAG_SECTION, GROUP_SECTION, PREFIX, prefixed, unprefixed
from grokmon.report.data import load_run

PACKAGE = Path(__file__).resolve().parent.parent / "grokmon"


def test_the_prefix_is_not_a_setting() -> None:
    with pytest.raises(ConfigError, match="MonitorConfig has no field 'prefix'"):
        MonitorConfig(prefix="moe/")


def test_no_module_but_keys_spells_the_prefix() -> None:
    """No literal starting with ``"grokmon/"`` (``"grokmon/*"`` included) and no f-string key starting with
    it outside grokmon/keys.py (nor the W&B
    section stems ``grokmon_group/`` and ``grokmon_diag/``, which keys.py derives from the prefix)."""
    stems = {PREFIX, GROUP_SECTION, DIAG_SECTION}
    assert (GROUP_SECTION, DIAG_SECTION) == ("grokmon_group/", "grokmon_diag/")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "keys.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(tuple(stems)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            elif (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
                  and node.values[0].value in stems):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} (f-string)")
    assert found == []


def test_a_run_reads_back_through_every_reader(make_monitor, tmp_path) -> None:
    """What the monitor writes, read_metrics, the report and a rule given a prefixed key all find."""
    rule = PlateauRule(PREFIX + "pathway_distance", patience=1, min_delta=10.0)  # a prefixed key is accepted
    monitor = make_monitor(every=1, async_metrics=False, alerts=[rule])
    model = tiny_model("olmoe")
    for step in (1, 2, 3):
        monitor.step(model, step)
    monitor.close()
    written = monitor.history[-1][1]
    assert written and all(key.startswith(PREFIX) for key in written)
    records = read_metrics(monitor.jsonl_path)
    assert [step for step, _ in records] == [1, 2, 3]
    assert records[-1][1]["pathway_distance"] == written[PREFIX + "pathway_distance"]
    assert set(records[-1][1]) == {unprefixed(k) for k in written}
    run = load_run(monitor.jsonl_path)
    assert [s for s, _ in run.series["pathway_distance"]] == [1, 2, 3]
    assert set(run.grouped["pathway_distance"]) == {"a", "b"}
    assert written[PREFIX + "alert/" + rule.name] == 1.0  # the rule read the unprefixed series and fired
    assert prefixed({"x": 1.0}) == {PREFIX + "x": 1.0} and unprefixed("eval/accuracy") == "eval/accuracy"
