"""The HTML report in a real browser: headless Chromium renders it, dumps its DOM and a screenshot.

Skipped when no Chromium is installed (Debian/Ubuntu: ``apt-get install -y chromium``); set
``GROKMON_CHROMIUM`` to use a browser binary that is not on PATH under those names. With
``GROKMON_WRITE_DOCS_IMAGES=1`` the screenshot is also saved, palette-compressed, as
``docs/images/report.png`` (the image in docs/quickstart.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from report_dom import by_id, inside, parse, with_class  # noqa: E402
from report_fixtures import GROUPS, write_eval_csv, write_record  # noqa: E402

from grokmon.report import write_report  # noqa: E402
from grokmon.report.charts import STAGE_COLORS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = (os.environ.get("GROKMON_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome",
            "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if b and shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH: apt-get install -y chromium (Debian/Ubuntu) runs this browser test")

WIDTH, HEIGHT = 1280, 3200
CHARTS = ("chart-headline", "chart-groups", "chart-group-loss", "chart-expert-load")

# Injected into a copy of the page only (the report itself has no script): writes the rendered
# boxes of the charts and markers into the DOM, so --dump-dom shows what the browser laid out.
_LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const box = (e) => { const r = e.getBoundingClientRect();
                       return [r.left + scrollX, r.top + scrollY, r.width, r.height]; };
  const out = {};
  for (const id of %s) { const s = document.querySelector("#" + id + " svg"); out[id] = s ? box(s) : null; }
  out.markers = [...document.querySelectorAll("#chart-headline .alert-marker")].map(box);
  out.bands = {};
  for (const id of ["chart-groups", "chart-group-loss"]) {
    out.bands[id] = [...document.querySelectorAll("#" + id + " .stage-band")].map(
      (e) => [e.getAttribute("data-stage"), ...box(e)]);
  }
  const cfg = document.getElementById("config-record");
  out.config = cfg ? [box(cfg), [...cfg.querySelectorAll("dt")].map((e) => e.textContent)] : null;
  out.table = box(document.getElementById("stage-table"));
  out.groups = box(document.getElementById("groups"));
  const pre = document.createElement("pre"); pre.id = "layout"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""".replace("%s", json.dumps(CHARTS))


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}",
           f"--window-size={WIDTH},{HEIGHT}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    cwd = os.getcwd()
    os.chdir(tmp)  # relative paths: the page (and the docs image) shows run/grokmon.jsonl, not a tmp path
    try:
        record = write_record(Path("run") / "grokmon.jsonl")
        page = write_report(record, "report", eval_file=write_eval_csv(Path("eval.csv")),
                            title="grokmon report: three-domain run (synthetic)").resolve()
    finally:
        os.chdir(cwd)
    probe = page.with_name("layout.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _LAYOUT_PROBE + "</body>"),
                     encoding="utf-8")
    dom = _chromium("--dump-dom", probe.as_uri(), tmp_path=tmp).stdout
    shot = tmp / "screenshot.png"
    _chromium(f"--screenshot={shot}", page.as_uri(), tmp_path=tmp)
    return {"dom": dom, "shot": shot, "page": page}


def test_browser_dom_has_charts_table_and_markers(rendered):
    els = parse(rendered["dom"])
    for chart in CHARTS:
        assert inside(els, chart, "svg"), f"no SVG in #{chart} after the browser parsed the page"
    assert len(with_class(els, "alert-marker", inside="chart-headline")) == 2
    assert len(inside(els, "stage-table", "tr")) == 1 + 2 + 3  # header, 2 alerts, 3 stage changes
    assert {e.attrs["data-group"] for e in with_class(els, "group-line", inside="chart-groups")} == set(GROUPS)

    layout = json.loads("".join(by_id(els, "layout").text))
    for chart in CHARTS:
        x, y, w, h = layout[chart]
        assert w > 400 and h > 200, f"#{chart} rendered {w}x{h}"
    hx, hy, hw, hh = layout["chart-headline"]
    assert len(layout["markers"]) == 2
    for x, y, w, h in layout["markers"]:  # drawn, and inside the headline chart
        assert w > 3 and h > 3 and hx <= x <= hx + hw and hy <= y <= hy + hh
    assert layout["table"][3] > 100


def test_browser_group_charts_have_stage_shading_and_the_page_the_config_line(rendered):
    """The stage bands behind the per-group lines are laid out, coloured, inside their chart; the
    configuration line the monitor writes first is rendered."""
    els = parse(rendered["dom"])
    layout = json.loads("".join(by_id(els, "layout").text))
    pixels = _pixels(rendered["shot"])
    for chart in ("chart-groups", "chart-group-loss"):
        cx, cy, cw, ch = layout[chart]
        bands = layout["bands"][chart]
        assert [stage for stage, *_ in bands] == ["memorizing", "unknown"], chart
        for stage, x, y, w, h in bands:
            assert w > 10 and h > 50 and cx - 1 <= x and x + w <= cx + cw + 1, (chart, stage, x, w)
            # the band is tinted with its stage colour in the screenshot (alpha 0.2 over white)
            tint = STAGE_COLORS[stage].lstrip("#")
            want = [1 - 0.2 * (1 - int(tint[i:i + 2], 16) / 255) for i in (0, 2, 4)]
            patch = pixels[int(y + h * 0.1):int(y + h * 0.9), int(x + 2):int(x + w - 2)].reshape(-1, 3)
            close = (abs(patch - want) < 0.03).all(axis=1).mean()
            assert close > 0.3, f"{chart}: the {stage} band is not tinted in the screenshot ({close:.0%})"
    (x, y, w, h), names = layout["config"]
    assert w > 300 and h > 40
    assert {"grokmon", "torch", "probe_fingerprint", "monitor"} <= set(names)


def _pixels(path: Path):
    image = pytest.importorskip("matplotlib.image")
    return image.imread(path)[..., :3]


def test_browser_screenshot_is_not_blank(rendered):
    pixels = _pixels(rendered["shot"])
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    colours = {tuple(p) for p in (pixels[::3, ::3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 200, f"the screenshot has only {len(colours)} colours: a blank or failed render"
    els = parse(rendered["dom"])
    x, y, w, h = (int(v) for v in json.loads("".join(by_id(els, "layout").text))["chart-headline"])
    chart = pixels[y:y + h, x:x + w]
    chart_colours = {tuple(p) for p in (chart[::2, ::2] * 255).astype(int).reshape(-1, 3)}
    assert len(chart_colours) > 50, "the headline chart area of the screenshot is (nearly) empty"
    if os.environ.get("GROKMON_WRITE_DOCS_IMAGES") == "1":
        gx, gy, gw, gh = json.loads("".join(by_id(els, "layout").text))["groups"]
        _write_docs_image(rendered["shot"], ROOT / "docs" / "images" / "report.png", int(gy + gh + 12))


def _write_docs_image(shot: Path, target: Path, height: int) -> None:
    """The top of the page (header, headline and per-group charts), as a small palette PNG."""
    Image = pytest.importorskip("PIL.Image")
    with Image.open(shot) as im:
        top = im.convert("RGB").crop((0, 0, im.width, min(height, im.height)))
        small = top.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        target.parent.mkdir(parents=True, exist_ok=True)
        small.save(target, optimize=True)
    assert target.stat().st_size < 300_000, f"{target} is {target.stat().st_size} bytes: keep docs images small"
