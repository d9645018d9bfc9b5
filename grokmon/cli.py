"""``grokmon`` command line: scan saved checkpoints, report on a run, build a probe file.

    grokmon scan ckpts/checkpoint-* --probe probe.pt --out scan/   # metrics per checkpoint
    grokmon report scan/grokmon.jsonl --out report/                # one HTML page + overview.png
    grokmon probe corpus.jsonl --tokenizer tok/ --n 512 --seq-len 256 --group-key domain --skip-short --out probe.pt

Example:
    >>> main(["report", "run/grokmon.jsonl", "--out", "plots"])   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Sequence

from .config import MonitorConfig
from .errors import GrokmonError
from .metrics import MetricConfig

_STEP_IN_NAME = re.compile(r"(?:checkpoint|step|ckpt|iter)[-_]?(\d+)", re.IGNORECASE)


def checkpoint_step(path: Path) -> int:
    """The training step of a saved checkpoint: ``trainer_state.json``, else digits in its name."""
    state = path / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text(encoding="utf-8", errors="replace"))["global_step"])
        except (ValueError, KeyError, TypeError, OverflowError) as error:  # JSONDecodeError is a ValueError
            raise GrokmonError(
                f"{state} has no readable global_step ({type(error).__name__}: {error}): "
                "restore the Trainer's trainer_state.json or delete it to take the step from the folder name"
            ) from None
    match = _STEP_IN_NAME.search(path.name) or re.search(r"(\d+)$", path.name)
    if match is None:
        raise GrokmonError(
            f"cannot tell the step of checkpoint {path}: name it like 'checkpoint-1200' or 'step1200', "
            "or keep the Trainer's trainer_state.json in it"
        )
    return int(match.group(1))


def _check_device(device: str) -> None:
    """A clear error for a device this machine does not have, before any checkpoint is loaded."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as error:
        raise GrokmonError(f"--device {device!r} is not a device ({error}): use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GrokmonError(f"--device {device} asks for CUDA, which this machine does not have: use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise GrokmonError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _load_model(path: Path, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    if not path.is_dir():
        raise GrokmonError(f"checkpoint {path} is not a directory: pass saved Hugging Face checkpoint folders")
    if not (path / "config.json").is_file():
        raise GrokmonError(f"{path} has no config.json: it is not a saved Hugging Face model (save_pretrained)")
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, config=config)
    return model.to(device)


def scan(
    checkpoints: Sequence[str | Path],
    probe_path: str | Path,
    out_dir: str | Path,
    *,
    config: MonitorConfig | None = None,
    device: str | None = None,
    progress: bool = True,
) -> list[tuple[int, dict]]:
    """Compute every metric for each checkpoint (sorted by step); resumable; writes JSONL and CSV.

    The metrics are a live run's (the same metric job, probe loss per group included), written
    by :class:`~grokmon.sinks.JsonlSink` in the one grokmon record format with the checkpoint as
    an extra field; ``grokmon.csv`` has one row per checkpoint, keys without the prefix.
    Checkpoints already recorded in ``out_dir/grokmon.jsonl`` are skipped, so an interrupted scan
    picks up where it stopped. Returns the ``(step, metrics)`` records of the whole scan (keys
    without the prefix). The settings are a live run's: ``config`` (default ``MonitorConfig()``)
    gives the metrics (``config.metrics``), the probe batch (``config.batch_size``) and whether
    token ids are kept; its other fields do not apply to a scan.

    A checkpoint that cannot be loaded or probed is skipped and the others are scanned and
    written; a :class:`~grokmon.GrokmonError` then lists each skipped checkpoint with a one-line
    reason (the CLI prints it and exits 2).
    """
    import torch
    from tqdm.auto import tqdm

    from .probe import ProbeSet
    from .results import metric_job
    from .routing import capture_pathways
    from .runinfo import config_line
    from .sinks import JsonlSink
    from .keys import prefixed

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GrokmonError(f"--out {out} is a file: pass a folder for grokmon.jsonl and grokmon.csv")
    out.mkdir(parents=True, exist_ok=True)
    probe = ProbeSet.load(probe_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(device)
    paths = [Path(c) for c in checkpoints]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise GrokmonError(f"checkpoint(s) not found: {', '.join(missing)}")
    ordered = sorted(paths, key=checkpoint_step)
    jsonl = out / "grokmon.jsonl"
    done = _scanned(jsonl)
    settings = config or MonitorConfig()
    config = settings.metrics
    previous = None
    records: list[tuple[int, dict]] = []
    skipped: list[str] = []
    resumed = [p for p in ordered if str(p.resolve()) in done]
    if resumed and progress:
        print(f"grokmon scan: {len(resumed)} of {len(ordered)} checkpoints are already in {jsonl}, skipped: "
              + ", ".join(p.name for p in resumed), file=sys.stderr)
    with JsonlSink(jsonl, ordered=False) as sink:  # checkpoints come in the order the user gives them
        if not done:  # the configuration line first: settings, probe fingerprint, versions
            sink.write_config(config_line(probe, metrics=config, source="grokmon scan",
                                          probe_file=str(Path(probe_path).resolve()), batch_size=settings.batch_size))
        for path in tqdm(ordered, desc="grokmon scan", unit="ckpt", disable=not progress):
            key = str(path.resolve())
            if key in done:
                records.append(done[key])
                previous = None  # drift needs the pathways, which are not stored: skip it once
                continue
            try:  # one unreadable checkpoint (truncated weights, a broken config) must not lose the others
                model = _load_model(path, device)
                probe.validate(model.config.get_text_config().vocab_size)
                result = capture_pathways(
                    model, probe.input_ids.to(device),
                    None if probe.attention_mask is None else probe.attention_mask.to(device),
                    batch_size=settings.batch_size, groups=probe.groups, group_names=probe.group_names,
                    keep_token_ids=settings.capture_token_ids,
                )
                step = checkpoint_step(path)
                metrics = metric_job(step, result, previous, config)()
            except Exception as error:  # noqa: BLE001 - reported per checkpoint, then the scan goes on
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                skipped.append(f"skipped {path}: {type(error).__name__}: {reason}")
                previous = None
                continue
            sink.log(prefixed(metrics), step, fields={"checkpoint": key})
            records.append((step, metrics))
            previous = result.pathways
            del model
    _write_csv(records, out / "grokmon.csv")
    if skipped:
        raise GrokmonError(f"{len(skipped)} of {len(ordered)} checkpoints could not be scanned; the {len(records)} "
                           f"others are in {jsonl} and grokmon.csv:\n  " + "\n  ".join(skipped))
    return records


def _scanned(jsonl: Path) -> dict[str, tuple[int, dict]]:
    """The checkpoints a scan already recorded in ``jsonl``: ``{checkpoint: (step, metrics)}``."""
    from .sinks import read_jsonl
    from .sinks.jsonl import unprefixed

    done: dict[str, tuple[int, dict]] = {}
    for number, row in enumerate(read_jsonl(jsonl) if jsonl.exists() else [], 1):
        if "config" in row and "metrics" not in row:  # the configuration line
            continue
        if "checkpoint" not in row or "metrics" not in row:
            raise GrokmonError(
                f"line {number} of {jsonl} is not a grokmon scan record: --out already holds a "
                "grokmon.jsonl that grokmon scan did not write (a training run's?); pass --out a new folder"
            )
        done[row["checkpoint"]] = (row["step"], unprefixed(row["metrics"]))
    return done


def _write_csv(records: Sequence[tuple[int, dict]], path: Path) -> None:
    keys = sorted({k for _, m in records for k in m})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *keys])
        for step, metrics in records:
            writer.writerow([step, *("" if metrics.get(k) is None else metrics[k] for k in keys)])


def report(jsonl: str | Path, out_dir: str | Path, *, eval_file: str | Path | None = None, title: str | None = None,
           pngs: bool = False) -> list[Path]:
    """One self-contained HTML page and an overview PNG of ``jsonl`` (and, with ``pngs``, a PNG per
    metric plus an expert-load heatmap); returns the files written, the page first."""
    from .report import OVERVIEW_FILE, write_report

    path = Path(jsonl)
    if path.is_dir():  # a run's folder: its grokmon.jsonl (as write_report takes it)
        if not (path / "grokmon.jsonl").is_file():
            raise GrokmonError(f"{path} is a folder without a grokmon.jsonl: pass the grokmon.jsonl a run or a "
                               "scan wrote, or its folder")
        path = path / "grokmon.jsonl"
    if not path.is_file():
        raise GrokmonError(f"{path} does not exist: pass the grokmon.jsonl a run or a scan wrote, or its folder")
    page = write_report(path, out_dir, eval_file=eval_file, title=title)
    written = [page, Path(out_dir) / OVERVIEW_FILE]
    if pngs:
        from .plots import plot_expert_load, plot_metrics
        from .sinks import iter_metrics

        written += plot_metrics(iter_metrics(path), out_dir)   # streamed: memory does not grow with the record
        heatmap = plot_expert_load(iter_metrics(path), out_dir)
        written += [heatmap] if heatmap else []
    return written


def build_probe(
    corpus: str | Path, tokenizer: str, out: str | Path, *, n: int, seq_len: int, seed: int = 0,
    text_key: str = "text", group_key: str | None = None, min_length: int = 8, skip_short: bool = False,
    verbose: bool = False,
) -> Path:
    """Build a probe file from a JSONL (one object per line) or plain-text (one sample per line) corpus.

    The draw is :meth:`ProbeSet.from_dataset`'s: with ``group_key`` stratified (per-group counts as
    equal as possible), else plain; the same ``seed`` over the same rows picks the same samples.
    A text of fewer than ``min_length`` tokens is an error naming its corpus line, unless
    ``skip_short`` leaves such texts out before the draw. ``verbose`` prints what was skipped and
    the per-group counts (the CLI does).

    Example:
        >>> build_probe("corpus.jsonl", "tok/", "probe.pt", n=96, seq_len=64, group_key="domain",
        ...             skip_short=True, verbose=True)                  # doctest: +SKIP
        grokmon probe: skipped 3 of 900 texts shorter than --min-length 8 tokens
        grokmon probe: 96 samples (code 32, numbers 32, prose 32)
        PosixPath('probe.pt')
    """
    from transformers import AutoTokenizer

    from .probe import ProbeSet
    from .probe.sampling import sample_indices, stratified_pick

    path = Path(corpus)
    if not path.is_file():
        raise GrokmonError(f"corpus {path} does not exist")
    if n < 1:
        raise GrokmonError(f"--n must be a positive number of samples, got {n}")
    if Path(out).is_dir():
        raise GrokmonError(f"--out {out} is a folder: pass the probe file to write (e.g. {Path(out) / 'probe.pt'})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise GrokmonError(f"corpus {path} is not UTF-8 text (line {line}, byte {error.start}: "
                           f"{error.object[error.start:error.end]!r}): convert it to UTF-8 "
                           "(e.g. iconv -f latin1 -t utf-8)") from None
    texts, groups, lines = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        lines.append(number)
        if path.suffix in (".jsonl", ".json"):
            try:
                row = json.loads(line)
            except ValueError as error:
                raise GrokmonError(
                    f"line {number} of {path} is not JSON ({error}): write one JSON object per line, "
                    "or use a .txt corpus (one sample per line)"
                ) from None
            for key in (text_key, group_key):
                if key and (not isinstance(row, dict) or key not in row):
                    found = sorted(row) if isinstance(row, dict) else type(row).__name__
                    option = "--text-key" if key == text_key else "--group-key"
                    raise GrokmonError(
                        f"line {number} of {path} has no {key!r} field (found {found}): pass {option} its name"
                    )
            texts.append(row[text_key])
            if group_key:
                groups.append(str(row[group_key]))
        else:
            texts.append(line)
    if n > len(texts):
        raise GrokmonError(f"the corpus has {len(texts)} samples, fewer than --n {n}: lower --n")
    import torch

    bad = next(((i, t) for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise GrokmonError(f"line {lines[bad[0]]} of {path} has a {type(bad[1]).__name__} in its {text_key!r} field, "
                           "not text: fix the corpus, or pass --text-key the field that holds the text")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as error:
        why = "no such folder" if not Path(tokenizer).exists() else str(error).splitlines()[0]
        raise GrokmonError(
            f"cannot load the tokenizer {tokenizer} ({why}): pass --tokenizer a folder saved with "
            "tokenizer.save_pretrained(...) (or a Hub model id)"
        ) from None
    # token counts as ProbeSet.from_texts makes them (special tokens, cut at seq_len)
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=seq_len)["input_ids"]]
    rows = list(range(len(texts)))
    if skip_short:
        rows = [i for i in rows if lengths[i] >= min_length]
        if verbose:
            print(f"grokmon probe: skipped {len(texts) - len(rows)} of {len(texts)} texts shorter than "
                  f"--min-length {min_length} tokens")
        if n > len(rows):
            raise GrokmonError(f"the corpus has {len(rows)} texts of at least --min-length {min_length} tokens, "
                               f"fewer than --n {n}: lower --n or --min-length")
    gen = torch.Generator().manual_seed(int(seed))  # the draw of ProbeSet.from_dataset, on these rows
    if groups:
        picked = [rows[j] for j in stratified_pick([groups[i] for i in rows], n, gen)]
    else:
        picked = [rows[j] for j in sample_indices(len(rows), n, gen)]
    short = next((i for i in picked if lengths[i] < min_length), None)
    if short is not None:
        count = sum(1 for x in lengths if x < min_length)
        raise GrokmonError(
            f"line {lines[short]} of {path} has {lengths[short]} tokens, fewer than --min-length {min_length} "
            f"({count} line{'s' if count != 1 else ''} of the corpus {'are' if count != 1 else 'is'} that short): "
            "pass --skip-short to leave them out of the draw, or lower --min-length"
        )
    probe = ProbeSet.from_texts([texts[i] for i in picked], tok, seq_len=seq_len, min_length=min_length,
                                groups=[groups[i] for i in picked] if groups else None)
    probe.save(out)
    if verbose:
        counts = probe.group_counts() if probe.groups is not None else {}
        print(f"grokmon probe: {len(probe)} samples"
              + (" (" + ", ".join(f"{g} {c}" for g, c in counts.items()) + ")" if counts else ""))
    return Path(out)


def _plain(doc: str | None) -> str:
    """A docstring's first paragraph as plain terminal text (no reST backticks)."""
    return (doc or "").split("\n\n")[0].replace("``", "").replace("`", "")


def build_parser() -> argparse.ArgumentParser:
    """The ``grokmon`` argument parser (every option has help text; a test walks them all)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="grokmon", description=_plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run 'grokmon <command> --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"grokmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p_scan = sub.add_parser("scan", help="compute the metrics of saved checkpoints (resumable)",
                            description="Probe each saved Hugging Face checkpoint and write every metric to "
                                        "OUT/grokmon.jsonl and OUT/grokmon.csv, one row per checkpoint, in step order.")
    p_scan.add_argument("checkpoints", nargs="+", help="checkpoint folders (save_pretrained), e.g. ckpts/checkpoint-*")
    p_scan.add_argument("--probe", required=True, help="probe file (ProbeSet.save / grokmon probe)")
    p_scan.add_argument("--out", required=True, help="output folder; a scan already there is resumed")
    run, metric = MonitorConfig(), MetricConfig()  # the defaults of a live run, so a scan computes the same keys
    p_scan.add_argument("--batch-size", type=int, default=run.batch_size,
                        help=f"probe samples per forward (default {run.batch_size})")
    p_scan.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p_scan.add_argument("--per-layer", action="store_true", help="also log layer/<i>/... keys")
    p_scan.add_argument("--per-expert", action="store_true",
                        help="also log layer/<i>/expert/<e>/load keys (the report's expert-load heatmap)")
    p_scan.add_argument("--form", choices=("threshold", "topk", "token"), default=metric.form,
                        help=f"pathway form of the headline distance (default: {metric.form}, the paper's)")
    p_scan.add_argument("--threshold", type=float, default=metric.threshold,
                        help=f"cumulative weight of the threshold form ({metric.threshold})")
    p_scan.add_argument("--extra-forms", nargs="*", choices=("threshold", "topk", "token"), default=(),
                        help="further forms logged as pathway_distance/<form>")
    p_scan.add_argument("--max-pairs", type=int, default=metric.max_pairs,
                        help=f"most sample pairs per group for the distance; more are subsampled ({metric.max_pairs})")
    p_scan.add_argument("--seed", type=int, default=metric.seed, help=f"seed of the pair subsample ({metric.seed})")

    p_report = sub.add_parser("report", help="one HTML page and an overview PNG of a run",
                              description="Write OUT/report.html (self-contained: open it from disk) and "
                                          "OUT/overview.png from a grokmon JSONL record of a run or a scan.")
    p_report.add_argument("jsonl", help="the grokmon.jsonl of a run or a scan")
    p_report.add_argument("--out", required=True, help="output folder")
    p_report.add_argument("--eval", default=None, dest="eval_file",
                          help="held-out curves to draw beside the pathway curves: CSV with a step column, "
                               "JSONL of {step, name: value}, or JSON {name: [[step, value], ...]}")
    p_report.add_argument("--title", default=None, help="page title (default: the model probed and the run folder, from the record)")
    p_report.add_argument("--pngs", action="store_true", help="also write one PNG per metric and the load heatmap")

    p_probe = sub.add_parser("probe", help="build a probe file from a corpus",
                             description="Sample N texts from a corpus (stratified by --group-key, as "
                             "ProbeSet.from_dataset(group_by=...)), tokenize them, save a probe file and print "
                             "the per-group counts.")
    p_probe.add_argument("corpus", help=".jsonl (objects with a text field) or text, one sample a line")
    p_probe.add_argument("--tokenizer", required=True, help="a local tokenizer folder")
    p_probe.add_argument("--out", required=True, help="the probe file to write (e.g. probe.pt)")
    p_probe.add_argument("--n", type=int, default=512, help="samples in the probe (512)")
    p_probe.add_argument("--seq-len", type=int, default=256, help="tokens kept per sample (256)")
    p_probe.add_argument("--seed", type=int, default=0, help="seed of the sample draw (0)")
    p_probe.add_argument("--text-key", default="text", help="JSONL field holding the text (text)")
    p_probe.add_argument("--group-key", default=None, help="JSONL field holding the group, e.g. domain")
    p_probe.add_argument("--min-length", type=int, default=8, help="fewest tokens a sample may have (8)")
    p_probe.add_argument("--skip-short", action="store_true",
                         help="leave texts shorter than --min-length out of the draw (prints how many)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "scan":
            metrics = MetricConfig(form=args.form, threshold=args.threshold, extra_forms=tuple(args.extra_forms),
                                   max_pairs=args.max_pairs, seed=args.seed, per_layer=args.per_layer,
                                   per_expert=args.per_expert)
            records = scan(args.checkpoints, args.probe, args.out, device=args.device,
                           config=MonitorConfig(batch_size=args.batch_size, metrics=metrics))
            print(f"{len(records)} checkpoints -> {Path(args.out) / 'grokmon.jsonl'}, grokmon.csv")
        elif args.command == "report":
            for path in report(args.jsonl, args.out, eval_file=args.eval_file, title=args.title, pngs=args.pngs):
                print(path)
        else:
            print(build_probe(args.corpus, args.tokenizer, args.out, n=args.n, seq_len=args.seq_len,
                              seed=args.seed, text_key=args.text_key, group_key=args.group_key,
                              min_length=args.min_length, skip_short=args.skip_short, verbose=True))
    except GrokmonError as error:
        print(f"grokmon: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file the command reads or writes: the system's own words name it
        print(f"grokmon: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - the command line never shows a traceback
        print(f"grokmon: error: unexpected {type(error).__name__}: {error} (a grokmon bug: please report it with "
              "the command line that gave it)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
