"""The command line never shows a traceback: every input gives exit 0, or exit 2 and ``grokmon: error: ...``.

First each case issue 20 found (a non-UTF-8 corpus, mathtext in a group name / title / eval column,
a NUL byte or a 300-character key with ``--pngs``, alert steps ``"abc"`` and ``1e400``, ``scan --out``
at a file, ``global_step: 1e400``, ``probe --out`` at a folder, ``report <folder>``), then a
property-based test (hypothesis) that feeds ``report``, ``probe`` and ``scan`` random bytes, random
JSON records, unicode, mathtext, NUL bytes, long keys and overflowing numbers. ``main()`` is called
in-process; the last-resort handler's ``unexpected`` message counts as a failure here.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grokmon.cli import main

HOSTILE = ["$\\frac{$", "$\\frac{", "$x^$", "a\x00b", "k" * 300, "é/ü", "🙂", "..", "/", "", " ", "\n", "%s", "<b>"]


def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse: exit 2 with its usage message
            code = stop.code
    return code, err.getvalue()


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    if code == 2:
        assert "grokmon: error:" in err or "usage:" in err, err


def metric_line(step, metrics) -> str:
    return json.dumps({"step": step, "time": 1.0, "metrics": metrics}) + "\n"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(40)]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok")
    tf.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def probe_file(tmp_path_factory) -> Path:
    from moe_models import random_probe

    path = tmp_path_factory.mktemp("probe") / "probe.pt"
    random_probe().save(path)
    return path


# ---------------------------------------------------------------------------- the cases issue 20 found


@pytest.mark.parametrize("where", ["group", "title", "eval"])
def test_report_draws_mathtext_as_text(tmp_path, where) -> None:
    math = "$\\frac{$"
    key = f"grokmon/group/{math}/pathway_distance" if where == "group" else "grokmon/group/a/pathway_distance"
    metrics = {"grokmon/pathway_distance": 0.5, key: 0.4, **({f"eval/{math}": 0.9} if where == "eval" else {})}
    (tmp_path / "g.jsonl").write_text(metric_line(0, metrics) + metric_line(10, metrics))
    extra = ["--title", math] if where == "title" else []
    code, err = run_cli("report", tmp_path / "g.jsonl", "--out", tmp_path / "out", "--pngs", *extra)
    assert code == 0, err
    assert math.replace("\\", "\\") in (tmp_path / "out" / "report.html").read_text() or where != "title"


def test_report_pngs_of_a_nul_byte_and_a_300_character_key(tmp_path) -> None:
    metrics = {"grokmon/pathway_distance": 0.5, "grokmon/a\x00b": 1.0, "grokmon/" + "k" * 300: 2.0,
               "grokmon/a_b": 3.0}
    (tmp_path / "g.jsonl").write_text(metric_line(0, metrics))
    code, err = run_cli("report", tmp_path / "g.jsonl", "--out", tmp_path / "out", "--pngs")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(names) == len(set(names)) and all(len(n) < 120 for n in names)
    assert "a_b.png" in names and sum(n.startswith("a_b-") for n in names) == 1   # NUL: its own, hashed name


@pytest.mark.parametrize("step", ['"abc"', "1e400", "null", "-5"])
def test_report_with_alert_steps_that_are_not_numbers(tmp_path, step) -> None:
    lines = metric_line(0, {"grokmon/pathway_distance": 0.5}) + metric_line(10, {"grokmon/pathway_distance": 0.4})
    lines += '{"step": %s, "alert": {"title": "t", "text": "x", "level": "WARN", "kind": "stage", ' \
             '"extra": {"group": "a", "stage": "grokking"}}}\n' % step
    lines += '{"step": 10, "alert": {"title": "t", "step": %s}}\n' % step
    (tmp_path / "g.jsonl").write_text(lines)
    code, err = run_cli("report", tmp_path / "g.jsonl", "--out", tmp_path / "out")
    assert code == 0, err


def test_report_accepts_a_run_folder(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "grokmon.jsonl").write_text(metric_line(0, {"grokmon/pathway_distance": 0.5}))
    code, err = run_cli("report", tmp_path / "run", "--out", tmp_path / "out", "--pngs")
    assert code == 0, err
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "pathway_distance.png").is_file()
    code, err = run_cli("report", tmp_path / "out", "--out", tmp_path / "out2")
    assert code == 2 and "is a folder without a grokmon.jsonl" in err


def test_scan_out_at_a_file_and_an_overflowing_global_step(tmp_path, probe_file) -> None:
    (tmp_path / "taken").write_text("x")
    code, err = run_cli("scan", tmp_path / "ck", "--probe", probe_file, "--out", tmp_path / "taken")
    assert code == 2 and "is a file: pass a folder" in err
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": 1e400}')
    code, err = run_cli("scan", tmp_path / "checkpoint-5", "--probe", probe_file, "--out", tmp_path / "scan",
                        "--device", "cpu")
    assert code == 2 and "OverflowError" in err


def test_probe_of_a_latin1_corpus_and_out_at_a_folder(tmp_path, tokenizer_dir) -> None:
    (tmp_path / "latin.txt").write_bytes("w1 w2 caf\xe9\n".encode("latin-1") * 4)
    code, err = run_cli("probe", tmp_path / "latin.txt", "--tokenizer", tokenizer_dir, "--out", tmp_path / "p.pt",
                        "--n", "2", "--min-length", "1")
    assert code == 2 and "is not UTF-8 text (line 1, byte 9" in err
    (tmp_path / "ok.txt").write_text("w1 w2 w3\n" * 4)
    (tmp_path / "dir").mkdir()
    code, err = run_cli("probe", tmp_path / "ok.txt", "--tokenizer", tokenizer_dir, "--out", tmp_path / "dir",
                        "--n", "2", "--min-length", "1")
    assert code == 2 and "is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "latin.txt", "ok.txt"]   # no dir.tmp left


# ---------------------------------------------------------------------------- property-based

texts = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
numbers = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.sampled_from(["1e400", "-1e400"]))
scalars = st.one_of(numbers, texts, st.none(), st.booleans())


def _json(value) -> str:
    """JSON with numbers that overflow a float written as such (``1e400``)."""
    if isinstance(value, str) and value in ("1e400", "-1e400"):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    return json.dumps(value)


keys = st.one_of(texts, texts.map(lambda t: f"grokmon/{t}"), texts.map(lambda t: f"grokmon/group/{t}/pathway_distance"),
                 st.sampled_from(["grokmon/pathway_distance", "grokmon/stage", "grokmon/group/a/stage",
                                  "grokmon/layer/0/expert/1/load", "eval/acc"]))
metric_records = st.fixed_dictionaries({"step": st.one_of(st.integers(0, 10**6), scalars),
                                        "metrics": st.dictionaries(keys, scalars, max_size=4)})
alert_records = st.fixed_dictionaries({"step": scalars, "alert": st.fixed_dictionaries(
    {"title": scalars, "text": scalars, "level": scalars, "kind": st.sampled_from(["stage", "rule", None]),
     "metric": scalars, "step": scalars,
     "extra": st.dictionaries(st.sampled_from(["group", "stage", "previous"]), scalars, max_size=3)})})
other = st.one_of(scalars, st.lists(scalars, max_size=3), st.fixed_dictionaries({"config": st.dictionaries(texts, scalars, max_size=2)}))
good_metric_records = st.fixed_dictionaries({"step": st.integers(0, 10**6), "time": numbers,
                                             "metrics": st.dictionaries(keys, numbers, min_size=1, max_size=4)})
jsonl_text = st.one_of(
    st.lists(st.one_of(good_metric_records, alert_records), min_size=1, max_size=6),        # mostly readable
    st.lists(st.one_of(metric_records, alert_records, other), max_size=6),                  # anything
).map(lambda rows: "".join(_json(r) + "\n" for r in rows))
file_bytes = st.one_of(jsonl_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200))
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(data=file_bytes, title=st.one_of(st.none(), texts), pngs=st.booleans(), eval_data=st.one_of(st.none(), file_bytes),
       eval_suffix=st.sampled_from([".csv", ".jsonl", ".json"]))
def test_report_never_shows_a_traceback(data, title, pngs, eval_data, eval_suffix) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "g.jsonl").write_bytes(data)
        argv = ["report", tmp / "g.jsonl", "--out", tmp / "out"]
        if title is not None and "\x00" not in title:     # argv cannot hold a NUL byte
            argv += ["--title", title]
        if pngs:
            argv.append("--pngs")
        if eval_data is not None:
            (tmp / f"eval{eval_suffix}").write_bytes(eval_data)
            argv += ["--eval", tmp / f"eval{eval_suffix}"]
        assert_clean(*run_cli(*argv))


corpus_rows = st.lists(st.one_of(texts, st.fixed_dictionaries({"text": scalars, "domain": scalars}), scalars),
                       max_size=6).map(lambda rows: "".join(_json(r) + "\n" for r in rows).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), corpus_rows), suffix=st.sampled_from([".txt", ".jsonl"]),
       n=st.integers(-1, 4), group=st.booleans(), out_is_dir=st.booleans())
def test_probe_never_shows_a_traceback(tokenizer_dir, data, suffix, n, group, out_is_dir) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / f"corpus{suffix}").write_bytes(data)
        out = tmp / "probe.pt"
        if out_is_dir:
            out.mkdir()
        argv = ["probe", tmp / f"corpus{suffix}", "--tokenizer", tokenizer_dir, "--out", out, "--n", str(n),
                "--seq-len", "8", "--min-length", "1", *(["--group-key", "domain"] if group else [])]
        assert_clean(*run_cli(*argv))
        assert not (tmp / "probe.pt.tmp").exists()


@FUZZ
@given(state=st.one_of(st.binary(max_size=100), st.fixed_dictionaries({"global_step": scalars}).map(_json).map(str.encode)),
       name=st.sampled_from(["checkpoint-7", "step12", "ckpt", "x" * 200, "checkpoint-99999999999999999999999"]),
       probe_bytes=st.one_of(st.none(), st.binary(max_size=64)), out=st.sampled_from(["new", "file", "run"]))
def test_scan_never_shows_a_traceback(probe_file, state, name, probe_bytes, out) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / name).mkdir()
        (tmp / name / "trainer_state.json").write_bytes(state)
        probe = probe_file
        if probe_bytes is not None:
            probe = tmp / "probe.pt"
            probe.write_bytes(probe_bytes)
        (tmp / "file").write_text("x")
        (tmp / "run").mkdir()
        (tmp / "run" / "grokmon.jsonl").write_text(metric_line(5, {"grokmon/pathway_distance": 0.5}))
        assert_clean(*run_cli("scan", tmp / name, "--probe", probe, "--out", tmp / out, "--device", "cpu"))
