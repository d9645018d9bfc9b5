"""grokmon.report: the one-page HTML report, read back as HTML (the browser test is test_report_browser.py)."""

from __future__ import annotations

import json
import math
import sys

import pytest
from optional import need

need("matplotlib")

from report_dom import by_id, inside, parse, with_class  # noqa: E402
from report_fixtures import GROUPS, LAYERS, STEPS, eval_accuracy, write_eval_csv, write_record  # noqa: E402

from grokmon.errors import ConfigError, SinkError  # noqa: E402
from grokmon.report import load_run, read_eval_file, write_report  # noqa: E402
from grokmon.sinks import read_jsonl  # noqa: E402


@pytest.fixture
def record(tmp_path):
    return write_record(tmp_path / "run" / "grokmon.jsonl")


def _page(path):
    return path.read_text(encoding="utf-8")


def _facts(els):
    """``{label: text}`` of the ``#run-config`` list."""
    items = [e for e in inside(els, "run-config") if e.tag in ("dt", "dd")]
    return {dt: dd for dt, dd in zip(*[iter("".join(e.text).strip() for e in items)] * 2)}


def test_report_has_every_part_of_the_run(record, tmp_path):
    evalf = write_eval_csv(tmp_path / "eval.csv")
    path = write_report(record, tmp_path / "out", eval_file=evalf, title="three-domain run")
    assert path == tmp_path / "out" / "report.html"
    page = _page(path)
    els = parse(page)
    assert by_id(els, "report-header").tag == "header"
    assert "three-domain run" in "".join(by_id(els, "report-header").text)
    for chart in ("chart-headline", "chart-groups", "chart-group-loss", "chart-expert-load"):
        assert inside(els, chart, "svg"), f"{chart} has no inline SVG"

    stage_alerts = [r["alert"] for r in read_jsonl(record) if "alert" in r and r["alert"]["kind"] == "stage"]
    other_alerts = [r["alert"] for r in read_jsonl(record) if "alert" in r and r["alert"]["kind"] != "stage"]
    assert len(stage_alerts) >= 2 and len(other_alerts) >= 1  # the fixture fires both kinds

    # every non-stage alert is a marker on the headline chart, at its step and level
    markers = with_class(els, "alert-marker", inside="chart-headline")
    assert sorted((int(m.attrs["data-step"]), m.attrs["data-level"]) for m in markers) == sorted(
        (a["step"], a["level"]) for a in other_alerts)
    assert all(m.tag == "g" and any("plateau" in t for t in m.text) for m in markers)  # <title> tooltip

    # the table: one row per stage change (with the alert's text) and per alert, by step
    rows = inside(els, "stage-table", "tr")
    stage_rows = [r for r in rows if "stage-row" in r.classes]
    assert [(int(r.attrs["data-step"]), r.attrs["data-group"], r.attrs["data-stage"]) for r in stage_rows] == [
        (a["step"], a["extra"]["group"] or "overall", a["extra"]["stage"]) for a in stage_alerts]
    assert all(any(a["text"] in "".join(r.text) for a in stage_alerts) for r in stage_rows)
    assert len([r for r in rows if "alert-row" in r.classes]) == len(other_alerts)
    steps = [int(r.attrs["data-step"]) for r in rows if "data-step" in r.attrs]
    assert steps == sorted(steps)

    # one line per group on both group charts; one stage-bar row per group plus the whole set
    for chart in ("chart-groups", "chart-group-loss"):
        assert sorted(e.attrs["data-group"] for e in with_class(els, "group-line", inside=chart)) == sorted(GROUPS)
    bars = with_class(els, "stage-bar", inside="chart-headline")
    assert {b.attrs["data-group"] for b in bars} == {"overall", *GROUPS}
    assert {b.attrs["data-stage"] for b in bars} == {"loss_falling", "unknown"}
    # the current stage of each group in the summary badges
    badges = {b.attrs["data-group"]: "".join(b.text) for b in with_class(els, "stage-badge")}
    assert set(badges) == {"overall", *GROUPS}
    assert "prose: loss_falling since step 100" in badges["prose"]   # step 0: no fall seen yet

    # held-out curve and run facts
    svg_text = " ".join(t for e in inside(els, "chart-headline") for t in e.text)
    assert "held-out: eval/accuracy" in svg_text
    facts = _facts(els)
    assert facts["probes"] == f"{len(STEPS)} at steps 0–3000, every 100 steps"
    assert facts["groups"] == ", ".join(GROUPS)
    assert facts["held-out curves"].startswith("eval/accuracy (from ") and "eval.csv" in facts["held-out curves"]
    assert facts["non-finite values"].startswith("1 ")  # the fixture's failed pathway_cosine
    assert facts["experts per layer"] == "8" and facts["MoE layers with per-layer keys"] == "0, 1"
    heat = " ".join(t for e in inside(els, "chart-expert-load") for t in e.text)
    assert all(f"layer {i}" in heat for i in range(LAYERS))


def test_report_is_self_contained(record, tmp_path):
    page = _page(write_report(record, tmp_path / "out"))
    els = parse(page)
    assert not [e for e in els if e.tag in ("script", "link", "iframe", "object")]
    for e in els:
        for attr in ("src", "href", "xlink:href"):
            value = e.attrs.get(attr, "")
            assert not value.startswith(("http:", "https:", "//", "file:")), (e.tag, attr, value)
    assert "@import" not in page and "url(http" not in page
    # several inline SVGs on one page: their internal ids must not collide
    ids = [e.attrs["id"] for e in els if "id" in e.attrs]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_overview_png(record, tmp_path):
    image = need("matplotlib.image")
    write_report(record, tmp_path / "out")
    png = tmp_path / "out" / "overview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(png)
    h, w = pixels.shape[:2]
    assert w >= 900 and h >= 600
    distinct = {tuple(p) for p in (pixels[::4, ::4, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(distinct) > 50  # curves, bands and a legend, not a blank canvas


def test_eval_keys_in_the_jsonl_are_drawn(tmp_path):
    record = write_record(tmp_path / "grokmon.jsonl", eval_key=True)
    run = load_run(record)
    assert run.external["eval/accuracy"] == [(s, eval_accuracy(s)) for s in STEPS]
    els = parse(_page(write_report(record, tmp_path / "out")))
    assert "held-out: eval/accuracy" in " ".join(t for e in inside(els, "chart-headline") for t in e.text)
    assert _facts(els)["held-out curves"] == "eval/accuracy (from keys of the JSONL; drawn: eval/accuracy)"


def test_history_input_and_a_minimal_record(tmp_path):
    history = [(0, {"grokmon/pathway_distance": 0.7}), (50, {"grokmon/pathway_distance": 0.65}),
               (100, {"grokmon/pathway_distance": float("nan")}), (150, {"grokmon/pathway_distance": 0.6})]
    run = load_run(history)
    assert run.steps == [0, 50, 100, 150] and run.probe_every == 50 and run.non_finite == 1
    assert math.isnan(run.series["pathway_distance"][2][1])  # kept as a gap
    els = parse(_page(write_report(history, tmp_path / "out")))
    assert inside(els, "chart-headline", "svg")
    for empty in ("chart-groups", "chart-group-loss", "chart-expert-load"):
        assert "chart-empty" in by_id(els, empty).classes and not inside(els, empty, "svg")
    assert "no stage change and no alert" in "".join(by_id(els, "stage-table").text)
    assert not with_class(els, "stage-bar") and not with_class(els, "alert-marker")


def test_transitions_from_stage_codes_and_from_alerts():
    records = [
        {"step": 0, "metrics": {"grokmon/stage": 0.0, "grokmon/group/a/stage": 0.0}},
        {"step": 10, "metrics": {"grokmon/stage": 0.0, "grokmon/group/a/stage": 3.0}},
        {"step": 10, "alert": {"kind": "stage", "level": "INFO", "title": "t", "text": "group a: loss_falling -> unknown",
                               "extra": {"group": "a", "previous": "loss_falling", "stage": "unknown"}}},
        {"step": 20, "metrics": {"grokmon/stage": 1.0, "grokmon/group/a/stage": 3.0}},
        # a stage alert of a group whose codes the record lacks (e.g. logged by another tracker)
        {"step": 20, "alert": {"kind": "stage", "text": "b changed", "step": 20,
                               "extra": {"group": "b", "previous": "loss_falling", "stage": "saturated"}}},
        {"step": 20, "alert": {"kind": "plateau", "level": "WARN", "title": "p", "text": "flat", "step": 20}},
        {"config": {"every": 10, "probe_fingerprint": "abc"}},
    ]
    run = load_run(records)
    got = [(t.step, t.group, t.previous, t.stage, t.text) for t in run.transitions]
    assert got == [(10, "a", "loss_falling", "unknown", "group a: loss_falling -> unknown"),
                   (20, "overall", "loss_falling", "grokking", ""),
                   (20, "b", "loss_falling", "saturated", "b changed")]
    assert [a["kind"] for a in run.alerts] == ["plateau"]
    assert run.current_stages() == {"overall": ("grokking", 20), "a": ("unknown", 10)}
    assert run.config == {"every": 10, "probe_fingerprint": "abc"}


def test_config_record_and_probe_file_are_shown(tmp_path):
    torch = pytest.importorskip("torch")
    from grokmon.probe import ProbeSet

    record = write_record(tmp_path / "grokmon.jsonl")
    with open(record, "a") as f:
        f.write(json.dumps({"step": None, "config": {"every": 100, "metrics.form": "threshold"}}) + "\n")
    probe = ProbeSet.from_token_ids(torch.arange(2, 34).reshape(4, 8), groups=["code", "prose"] * 2)
    probe.save(tmp_path / "probe.pt")
    els = parse(_page(write_report(record, tmp_path / "out")))
    want = f"probe.pt: 4 samples × 8 tokens (code 2, prose 2), fingerprint {probe.fingerprint()[:16]}"
    assert _facts(els)["probe"] == want
    assert "metrics.form" in "".join(by_id(els, "config-record").text)
    # a damaged probe file does not stop the report; the page says what is wrong
    (tmp_path / "probe.pt").write_bytes(b"not a probe")
    els = parse(_page(write_report(record, tmp_path / "out")))
    assert "probe.pt: unreadable (" in _facts(els)["probe"]
    with pytest.raises(ConfigError, match="probe_file 'nope.pt' does not exist"):
        write_report(record, tmp_path / "out", probe_file="nope.pt")


def test_folder_input(record, tmp_path):
    assert write_report(record.parent, tmp_path / "out").is_file()
    with pytest.raises(ConfigError, match="is a folder without a grokmon.jsonl"):
        write_report(tmp_path / "out", tmp_path / "out2")


def test_errors_name_the_problem_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"does not exist: pass the grokmon.jsonl a run"):
        write_report(tmp_path / "missing.jsonl", tmp_path / "out")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="has no metric records: the file is empty or the run has not probed yet"):
        write_report(empty, tmp_path / "out")
    alerts_only = tmp_path / "alerts.jsonl"
    alerts_only.write_text(json.dumps({"step": 1, "alert": {"title": "t"}}) + "\n")
    with pytest.raises(ConfigError, match="has no metric records"):
        write_report(alerts_only, tmp_path / "out")
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"step": 1, "metrics": {}}\nnot json\n{"step": 2, "metrics": {}}\n')
    with pytest.raises(SinkError, match="line 2 of .* is not JSON"):
        write_report(corrupt, tmp_path / "out")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\n\x00")
    with pytest.raises(SinkError, match="is not JSON"):
        write_report(binary, tmp_path / "out")
    not_grokmon = tmp_path / "other.jsonl"
    not_grokmon.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="line 1 of .* is a JSON list, not a grokmon record"):
        write_report(not_grokmon, tmp_path / "out")
    with pytest.raises(ConfigError, match="needs a JSONL path or a list of records, got int"):
        write_report(3, tmp_path / "out")
    with pytest.raises(ConfigError, match="record 0 is a str"):
        write_report(["x"], tmp_path / "out")
    good = write_record(tmp_path / "good.jsonl")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="out_dir .* is a file: pass a folder"):
        write_report(good, tmp_path / "file")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with pytest.raises(ConfigError, match=r"the report needs matplotlib: pip install 'grokmon\[plot\]'"):
        write_report(good, tmp_path / "out")


# ---------------------------------------------------------------------------- eval files


def test_eval_file_formats_agree(tmp_path):
    want = {"eval/accuracy": [(0, 0.1), (100, 0.5)], "eval/loss": [(0, 2.0)]}
    (tmp_path / "e.csv").write_text("step,eval/accuracy,eval/loss\n100,0.5,\n0,0.1,2.0\n")
    (tmp_path / "e.jsonl").write_text('{"step": 0, "eval/accuracy": 0.1, "eval/loss": 2.0}\n\n'
                                      '{"step": 100, "metrics": {"eval/accuracy": 0.5, "eval/loss": null}}\n')
    (tmp_path / "e.json").write_text(json.dumps({"eval/accuracy": [[100, 0.5], [0, 0.1]], "eval/loss": [[0, 2.0]]}))
    (tmp_path / "l.json").write_text(json.dumps([{"step": 0, "eval/accuracy": 0.1, "eval/loss": 2.0},
                                                 {"step": 100, "eval/accuracy": 0.5, "eval/loss": "NaN"}]))
    for name in ("e.csv", "e.jsonl", "e.json", "l.json"):
        assert read_eval_file(tmp_path / name) == want, name


@pytest.mark.parametrize("name,content,match", [
    ("missing.csv", None, "does not exist"),
    ("e.csv", "", "is empty"),
    ("e.txt", "step,a\n0,1\n", "unknown file type '.txt'"),
    ("e.csv", "epoch,acc\n0,0.5\n", r"row 1 of eval_file .* has no 'step' \(found \['acc', 'epoch'\]\)"),
    ("e.csv", "step,acc\n0,high\n", "'acc' = 'high' is not a number"),
    ("e.csv", "step,acc\nzero,0.5\n", "step 'zero' is not a number"),
    ("e.jsonl", '{"step": 0, "acc": 1}\n{oops\n', "line 2 of eval_file .* is not JSON"),
    ("e.jsonl", "[1, 2]\n", "line 1 of eval_file .* is not a JSON object"),
    ("e.json", '"text"', "holds a JSON str"),
    ("e.json", '{"acc": [[0, 1, 2]]}', r"item 0 of 'acc' is not a \[step, value\] pair"),
    ("e.json", '{"acc": 0.5}', r"'acc' is not a list of \[step, value\] pairs"),
    ("e.csv", "step,acc\n0,\n", "has no numeric values"),
])
def test_eval_file_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        read_eval_file(path)


def test_a_thousand_groups_stay_readable(tmp_path):
    """Issue 20: 1000 groups drew a 1050 x 26461 px overview and a legend of 1000 entries."""
    import struct

    groups = [f"g{i:04d}" for i in range(1000)]
    records = []
    for step in (0, 100, 200):
        metrics = {"grokmon/pathway_distance": 0.5, "grokmon/probe_loss": 2.0, "grokmon/stage": 0.0}
        for i, g in enumerate(groups):
            metrics[f"grokmon/group/{g}/pathway_distance"] = 0.4 + i / 1e4
            metrics[f"grokmon/group/{g}/probe_loss"] = 2.0 - step / 1e3
            metrics[f"grokmon/group/{g}/stage"] = 0.0 if step < 200 or i % 2 else 1.0
        records.append((step, metrics))
    page = write_report(records, tmp_path / "out").read_text()
    width, height = struct.unpack(">II", (tmp_path / "out" / "overview.png").read_bytes()[16:24])
    assert height < 1600, (width, height)
    assert page.count('class="group-line"') == 2 * 12
    assert "Showing 12 of 1000 groups" in page and "median of 1000 groups" in page
    assert "The strip shows 24 of 1000 groups" in page
    assert page.count('class="stage-bar"') >= 24 and 'data-group="g0999"' in page   # first and last kept


def test_group_charts_carry_stage_bands_changes_and_labelled_alerts(record, tmp_path):
    els = parse(_page(write_report(record, tmp_path / "out")))
    rows = read_jsonl(record)
    stage_alerts = [r["alert"] for r in rows if "alert" in r and r["alert"]["kind"] == "stage"]
    other = [r["alert"] for r in rows if "alert" in r and r["alert"]["kind"] != "stage"]
    overall = [(r["step"], r["metrics"]["grokmon/stage"]) for r in rows if "metrics" in r]
    for chart in ("chart-groups", "chart-group-loss"):
        bands = with_class(els, "stage-band", inside=chart)
        # the whole probe set's stage behind the lines: one band per stretch, in order
        from grokmon.alerts.stages import STAGES

        first_step, first_code = overall[0]   # where the record's stage starts (a first probe may be unknown)
        expected = [(first_step, STAGES[int(first_code)])] + [(t["step"], t["extra"]["stage"]) for t in stage_alerts
                                                              if not t["extra"]["group"]]
        assert [(int(b.attrs["data-step"]), b.attrs["data-stage"]) for b in bands] == expected
        changes = with_class(els, "stage-change", inside=chart)
        assert sorted((int(c.attrs["data-step"]), c.attrs["data-group"]) for c in changes) == sorted(
            (t["step"], t["extra"]["group"]) for t in stage_alerts if t["extra"]["group"])
        markers = with_class(els, "alert-marker", inside=chart)
        assert sorted(int(m.attrs["data-step"]) for m in markers) == sorted(a["step"] for a in other)
    # every marker is labelled with its rule, as text in the SVG (the PNG has the same figure)
    headline = with_class(els, "alert-marker", inside="chart-headline")
    assert {m.attrs["data-label"] for m in headline} == {a["rule"] for a in other}
    svg_text = " ".join(t for e in inside(els, "chart-headline") for t in e.text)
    assert all(a["rule"] in svg_text for a in other)


def test_legend_lists_only_what_occurs(record, tmp_path):
    els = parse(_page(write_report(record, tmp_path / "out")))
    legend = inside(els, "legend")
    assert {e.attrs["data-stage"] for e in legend if "legend-stage" in e.classes} == {"loss_falling", "unknown"}
    assert {e.attrs["data-level"] for e in legend if "legend-alert" in e.classes} == {"WARN"}
    assert "claims" not in "".join(by_id(els, "legend").text)   # no grokking / saturated in this record
    history = [(s, {"grokmon/pathway_distance": 0.5, "grokmon/stage": float(c)}) for s, c in ((0, 0), (100, 1))]
    els = parse(_page(write_report(history, tmp_path / "two")))
    legend = inside(els, "legend")
    assert {e.attrs["data-stage"] for e in legend if "legend-stage" in e.classes} == {"loss_falling", "grokking"}
    assert not [e for e in legend if "legend-alert" in e.classes] and "claims" in "".join(by_id(els, "legend").text)


def test_axes_fit_the_data_and_a_late_stage_change_is_visible():
    from grokmon.report.charts import MIN_STRETCH, _intervals, _x_range

    history = [(s, {"grokmon/pathway_distance": 0.5, "grokmon/stage": 3.0 if s == 300 else 0.0})
               for s in (0, 100, 200, 300)]
    run = load_run(history)
    x0, x1, _ = _x_range(run)
    assert (x0, x1) == (-3.0, 303.0)                      # no x to 400 when the data end at 300
    spans = _intervals(run.stages["overall"], x1, x0)
    assert [(s, stage, n) for _, _, stage, s, n in spans] == [(0, "loss_falling", 0), (300, "unknown", 0)]
    start, width, _, _, _ = spans[-1]
    assert start == 250 and width == 53                    # from halfway to the probe before it
    many = [(s, 3.0 if s == 3000 else 0.0) for s in range(0, 3001, 10)]
    start, width, stage, seen, _ = _intervals(many, 3030.0, -30.0)[-1]
    assert (stage, seen) == ("unknown", 3000) and width == pytest.approx(MIN_STRETCH * 3060)   # not a sliver


def test_a_flapping_stage_is_drawn_in_a_bounded_number_of_stretches(tmp_path):
    """A stage that flips at every probe (3000 of them after 1000 steady ones) is drawn as the stage
    held longest in each slice, every change counted in a title, and the page stays small."""
    from grokmon.report.charts import MAX_STRETCHES, _intervals
    from grokmon.report.page import MAX_EVENT_ROWS

    def stage(i: int) -> float:
        return 0.0 if i < 1000 else 3.0 * (i % 2)

    history = [(10 * i, {"grokmon/pathway_distance": 0.5, "grokmon/stage": stage(i),
                         "grokmon/group/a/stage": stage(i), "grokmon/group/b/stage": 3.0}) for i in range(4000)]
    run = load_run(history)
    spans = _intervals(run.stages["a"], 40000.0, 0.0)
    assert len(spans) <= MAX_STRETCHES
    changes = sum(stage(i) != stage(i - 1) for i in range(1, 4000))       # 2999
    assert sum(n for *_, n in spans) == changes                              # every change counted once
    assert spans[0][2:4] == ("loss_falling", 0) and spans[0][0] == 0.0         # the steady start stays loss_falling
    assert spans[0][0] + spans[0][1] >= 10000.0 - 40000 / MAX_STRETCHES
    assert sum(w for _, w, *_ in spans) == pytest.approx(40000.0)           # slices tile the span, no overlap
    page = write_report(history, tmp_path / "flap")
    els = parse(_page(page))
    bars = [e for e in els if "stage-bar" in e.classes and e.attrs.get("data-group") == "a"]
    assert 1 < len(bars) <= MAX_STRETCHES
    assert any("stage changes here" in "".join(e.text) for e in bars)    # the <title> tooltip
    left_out = [e for e in els if "rows-left-out" in e.classes]
    listed = [e for e in els if "stage-row" in e.classes]
    assert len(listed) == MAX_EVENT_ROWS and len(left_out) == 1                 # the table is capped too
    assert len(listed) + int(left_out[0].attrs["data-count"]) == 2 * changes   # the whole set and group a
    assert page.stat().st_size < 400_000


def test_config_line_is_shown(record, tmp_path):
    els = parse(_page(write_report(record, tmp_path / "out")))
    config = inside(els, "config-record")
    text = {dt: dd for dt, dd in zip(*[iter("".join(e.text).strip() for e in config if e.tag in ("dt", "dd"))] * 2)}
    assert {"grokmon", "torch", "probe_fingerprint", "probe_samples", "probe_groups", "monitor"} <= set(text)
    assert "every=100" in text["monitor"] and text["probe_groups"] == "arithmetic=2, code=2, prose=2"
    bare = write_record(tmp_path / "bare" / "grokmon.jsonl", config=False)
    els = parse(_page(write_report(bare, tmp_path / "bare_out")))
    assert "no configuration line" in "".join(by_id(els, "no-config-record").text)


def test_monitor_writes_its_configuration_line_first(tmp_path):
    import torch

    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet

    probe = ProbeSet.from_token_ids([[5, 6, 7, 8], [1, 2, 3, 4], [3, 4, 5, 6], [7, 8, 9, 9]],
                                    groups=["a", "b", "a", "b"], min_length=2)
    monitor = GrokkingMonitor(probe, MonitorConfig(every=50, output_dir=str(tmp_path), batch_size=4))
    monitor.close()
    first = read_jsonl(tmp_path / "grokmon.jsonl")[0]
    assert set(first) == {"time", "config"}
    config = first["config"]
    assert config["probe_fingerprint"] == probe.fingerprint() and config["probe_groups"] == {"a": 2, "b": 2}
    assert config["monitor"]["every"] == 50 and config["monitor"]["batch_size"] == 4
    assert config["torch"] == torch.__version__
    from grokmon import __version__
    assert config["grokmon"] == __version__ and "model" not in config     # closed before any probe


def test_the_configuration_line_names_the_probed_model_and_titles_the_report(tmp_path):
    from moe_models import tiny_model

    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet

    model = tiny_model("mixtral")
    model.config._name_or_path = "tiny-mixtral"
    probe = ProbeSet.from_token_ids([[5, 6, 7, 8], [1, 2, 3, 4]], min_length=2)
    monitor = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=str(tmp_path / "run"), async_metrics=False))
    monitor.step(model, 0)
    monitor.step(model, 1)
    monitor.close()
    lines = read_jsonl(tmp_path / "run" / "grokmon.jsonl")
    assert [("config" in r, r.get("step")) for r in lines] == [(True, None), (False, 0), (False, 1)]
    assert lines[0]["config"]["model"] == {"class": "MixtralForCausalLM", "model_type": "mixtral",
                                           "name_or_path": "tiny-mixtral"}
    els = parse(_page(write_report(tmp_path / "run" / "grokmon.jsonl", tmp_path / "page")))
    title = f"grokmon report: tiny-mixtral · {tmp_path.parent.name}/{tmp_path.name}/run"   # the folder's last 3 parts
    assert by_id(els, "report-header").text[0] == title
