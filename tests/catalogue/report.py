"""The error catalogue's cases: report (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grokmon.errors import ConfigError, SinkError

from catalogue.registry import case


def one_probe_record(tmp: Path) -> Path:
    """A one-probe grokmon.jsonl."""
    path = tmp / "grokmon.jsonl"
    path.write_text(json.dumps({"step": 0, "metrics": {"grokmon/pathway_distance": 0.5, "grokmon/probe_loss": 2.0}})
                    + "\n")
    return path


@case("report-jsonl-missing", ConfigError, "does not exist: pass the grokmon.jsonl a run (GrokkingMonitor output_dir) "
      "or grokmon scan wrote")
def _(tmp, mp):
    from grokmon.report import write_report

    write_report(tmp / "missing.jsonl", tmp / "out")


@case("report-folder-without-jsonl", ConfigError, "is a folder without a grokmon.jsonl: pass the JSONL file a run "
      "(GrokkingMonitor output_dir) or grokmon scan wrote")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "run").mkdir()
    write_report(tmp / "run", tmp / "out")


@case("report-jsonl-empty", ConfigError, "has no metric records: the file is empty or the run has not probed yet "
      "(the first probe is at step 0, then one each every= optimizer steps); wait for a probe, or pass the "
      "grokmon.jsonl of a run that has one")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_text("")
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-jsonl-alerts-only", ConfigError, "has no metric records: the file is empty or the run has not probed yet "
      "(the first probe is at step 0, then one each every= optimizer steps); wait for a probe, or pass the "
      "grokmon.jsonl of a run that has one")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "alerts.jsonl").write_text(json.dumps({"step": 1, "alert": {"title": "t"}}) + "\n")
    write_report(tmp / "alerts.jsonl", tmp / "out")


@case("report-jsonl-corrupt-line", SinkError, "line ... is not JSON (...): the file is corrupted; move it away")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_text('{"step": 1, "metrics": {}}\nnot json\n{"step": 2, "metrics": {}}\n')
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-jsonl-binary", SinkError, "line ... is not JSON (...): the file is corrupted; move it away")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\n\x00")
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-jsonl-line-not-object", ConfigError, "line 1 of ... is a JSON list, not a grokmon record: pass the "
      "grokmon.jsonl a run wrote")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_text("[1, 2]\n")
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-input-type", ConfigError, "write_report needs a JSONL path or a list of records, got int")
def _(tmp, mp):
    from grokmon.report import write_report

    write_report(3, tmp / "out")


@case("report-out-dir-is-a-file", ConfigError, "is a file: pass a folder for report.html and overview.png")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "file").write_text("")
    write_report(one_probe_record(tmp), tmp / "file")


@case("report-probe-file-missing", ConfigError, "probe_file 'nope.pt' does not exist: pass the probe.pt the monitor "
      "saved beside grokmon.jsonl, or leave probe_file out")
def _(tmp, mp):
    from grokmon.report import write_report

    mp.chdir(tmp)
    write_report(one_probe_record(tmp), tmp / "out", probe_file="nope.pt")


@case("report-eval-file-no-step", ConfigError, "row 1 of eval_file ... has no 'step' (found ['acc', 'epoch']): write "
      "CSV with a 'step' column,")
def _(tmp, mp):
    from grokmon.report.evalfile import read_eval_file

    (tmp / "eval.csv").write_text("acc,epoch\n0.5,1\n")
    read_eval_file(tmp / "eval.csv")


@case("report-matplotlib-missing", ConfigError, "the report needs matplotlib: pip install 'grokmon[plot]'")
def _(tmp, mp):
    from grokmon.report import write_report

    mp.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    write_report(one_probe_record(tmp), tmp / "out")
