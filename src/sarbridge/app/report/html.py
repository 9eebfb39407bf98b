"""``RUN_DIR/report.html``: one self-contained page to judge a run by looking at it.

:func:`write_report` reads only files of the run folder -- ``metrics.json`` (required),
``rankings.json`` (+ ``thumbs/``), ``train_log.jsonl`` (``coarse/`` and ``refine/`` logs for
localisation runs), ``analysis.json`` and its images, ``config.yaml`` -- and the image files the
rankings name. It needs no model and no GPU. Every picture is embedded as a base64 PNG ``data:``
URI and the CSS is inline, so the page opens offline and can be mailed as one file. All text from
the run folder is HTML-escaped.

Sections: header (run, task, dates, device, checkpoint), metrics per protocol / stage, CMC curves,
ranked lists of sampled and of the worst queries per protocol (green = same identity / true
location, yellow = overlapping neighbour, red = wrong), training curves, analysis (if any) and the
resolved config.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from PIL import Image, ImageDraw

from sarbridge.core.errors import SarbridgeError
from sarbridge.core.utils import atomic_write_text
from sarbridge.data.io import read_image
from sarbridge.retrieval.rankings import load_rankings, select_queries
from sarbridge.tasks.registry import ReportSpec, report_result_keys, report_task
from sarbridge.viz.figures import (
    RankedCandidate,
    RankedRow,
    Status,
    retrieval_figure,
    to_display_uint8,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: File name of the report inside a run folder.
REPORT_FILE = "report.html"

_LOGS = (("training", "train_log.jsonl"), ("coarse model", "coarse/train_log.jsonl"),
         ("graph refiner", "refine/train_log.jsonl"))
_IMAGE_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
_FIGURE_STATUS: dict[str, Status] = {"match": "match", "neighbour": "near", "near": "near", "wrong": "wrong"}
_MAX_SIDE = 256  # thumbnails are downscaled to this before drawing

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
main{max-width:1400px;margin:0 auto;padding:16px 28px 48px}
header{background:#1f2a3a;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:1.5em}
header dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0 0;font-size:.92em}
header dt{color:#aab6c8}header dd{margin:0;word-break:break-all}
nav{font-size:.9em;margin:10px 0 0}nav a{color:#cfe0ff;margin-right:14px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 20px 16px;margin:18px 0}
h2{font-size:1.25em;border-bottom:1px solid #e4e7ec;padding-bottom:4px}
h3{font-size:1.05em;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #d5dae1;padding:4px 9px;text-align:right}
th{background:#eef1f5}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
img{max-width:100%;height:auto;border:1px solid #e4e7ec}
pre{background:#f3f4f6;padding:10px;overflow:auto;font-size:.85em;border-radius:4px}
.note{color:#5b6472;font-size:.9em}.warn{color:#a15c00}
.legend span{display:inline-block;padding:1px 8px;margin-right:8px;border-radius:3px;color:#fff;font-size:.85em}
details{margin:4px 0 12px}summary{cursor:pointer;color:#36506e;font-size:.9em}
"""


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _prose(text: str) -> str:
    """HTML of a sentence (``<``, ``>`` and ``&`` escaped; quotes kept)."""
    return html.escape(text, quote=False)


# --------------------------------------------------------------------------------------------
# Reading the run folder
# --------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_log(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _load_metrics(run: Path) -> dict[str, Any]:
    path = run / "metrics.json"
    if not run.is_dir():
        raise SarbridgeError(f"run folder '{run}' not found", "pass the --out folder of sarbridge train/eval/demo")
    if not path.is_file():
        raise SarbridgeError(f"run folder '{run}' has no metrics.json",
                             "run sarbridge train/eval first (or sarbridge geo train/evaluate) with --out pointing there")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise SarbridgeError(f"'{path}' is not a JSON object", "re-run sarbridge evaluate (or geo evaluate) to rewrite it")
    return data


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------
def _data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def _figure_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return _data_uri(buf.getvalue())


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy: matplotlib
    from matplotlib.figure import Figure  # noqa: PLC0415 - lazy: matplotlib

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def placeholder_image(path: str, size: int = 128) -> np.ndarray:
    """A grey ``(size, size, 3)`` uint8 tile naming a missing image file (its last characters)."""
    im = Image.new("RGB", (size, size), (170, 170, 170))
    draw = ImageDraw.Draw(im)
    text = str(path)[-60:]
    width = max(8, size // 7)
    lines = ["missing:"] + [text[i:i + width] for i in range(0, len(text), width)]
    for j, line in enumerate(lines[: size // 12]):
        draw.text((4, 4 + 12 * j), line, fill=(40, 40, 40))
    return np.asarray(im)


class _Images:
    """Loads and downscales thumbnails once; remembers the files that could not be read."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.cache: dict[str, np.ndarray] = {}
        self.missing: list[str] = []
        self.bad: set[str] = set()

    def get(self, entry: dict[str, Any]) -> np.ndarray:
        """The display pixels of a rankings entry (its thumbnail or image file; a placeholder if unreadable)."""
        thumb = entry.get("thumb")
        source = str(self.run / thumb) if thumb else str(entry.get("path") or entry.get("source") or "?")
        if source in self.cache:
            if source in self.bad:
                self.missing.append(source)
            return self.cache[source]
        try:
            if not thumb and not entry.get("path"):
                raise FileNotFoundError(source)
            rgb = to_display_uint8(read_image(source))
            if max(rgb.shape[:2]) > _MAX_SIDE:
                im = Image.fromarray(rgb)
                im.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.LANCZOS)
                rgb = np.asarray(im)
        except Exception:  # missing or unreadable: a placeholder, never a crash
            rgb = placeholder_image(source)
            self.missing.append(source)
            self.bad.add(source)
        self.cache[source] = rgb
        return rgb


def _no_negative_zero(text: str) -> str:
    """``-0.0`` / ``-0`` / ``-0.000`` -> without the sign (a value that rounds to zero has none)."""
    return text[1:] if text.startswith("-") and text[1:].replace("0", "").replace(".", "") in ("", "e+", "e-") else text


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v)
    if isinstance(v, float):
        return _no_negative_zero(f"{v:.{digits}f}") if math.isfinite(v) else "n/a"
    return str(v)


def _fmt_measure(v: Any) -> str:
    """Measures of any scale (a gap of 0.0123, an accuracy of 0.9875): four significant digits."""
    if isinstance(v, float) and not isinstance(v, bool):
        return _no_negative_zero(f"{v:.4g}") if math.isfinite(v) else "n/a"
    return _fmt(v)


def _ranked_rows(protocol: dict[str, Any], picks: list[int], report: ReportSpec, images: _Images) -> list[RankedRow]:
    items = protocol.get("items") or []
    rows = []
    for i in picks:
        q = protocol["queries"][i]
        cands = []
        for r, t in enumerate(q.get("top") or []):
            item = items[t["item"]] if 0 <= int(t["item"]) < len(items) else {}
            cap = report.candidate_caption(r + 1, t, item)
            cands.append(RankedCandidate(images.get(item), _FIGURE_STATUS.get(t.get("status"), "wrong"), cap))
        rows.append(RankedRow(images.get(q), report.query_caption(q), cands))
    return rows


def _ranked_figure(rows: list[RankedRow], title: str, thumb: int) -> str:
    with tempfile.TemporaryDirectory(prefix="sarbridge-report-") as tmp:
        path = retrieval_figure(rows, Path(tmp) / "ranked.png", title=title, thumb=thumb)
        return _data_uri(path.read_bytes())


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[Any]], left: int = 1, fmt: Callable[[Any], str] = _fmt) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if j < left else f"<th>{_e(h)}</th>" for j, h in enumerate(header))
    body = []
    for row in rows:
        cells = "".join(f'<td class="l">{_e(fmt(v))}</td>' if j < left else f"<td>{_e(fmt(v))}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metrics_section(metrics: dict[str, Any], report: ReportSpec) -> str:
    parts = ['<section id="metrics"><h2>Metrics</h2>']
    header, rows = report.table(metrics)
    parts.append(_table(header, rows))
    note = report.note(metrics)
    if note:
        parts.append(f'<p class="note">{_prose(note)}</p>')
    skip = report_result_keys() | {"cmc", "meta"}
    other = {k: v for k, v in metrics.items() if k not in skip}
    meta = metrics.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    kv = [[k, v if not isinstance(v, (dict, list)) else json.dumps(v)] for k, v in {**meta, **other}.items()]
    if kv:
        parts.append("<h3>Run facts</h3>" + _table(["key", "value"], kv, left=2))
    parts.append("</section>")
    return "".join(parts)


def _cmc_section(metrics: dict[str, Any], rankings: dict[str, Any] | None, report: ReportSpec) -> str:
    curves: dict[str, list[float]] = {}
    if isinstance(metrics.get("cmc"), dict):
        curves = {k: list(v) for k, v in metrics["cmc"].items() if isinstance(v, list) and v}
    if rankings:
        for k, p in rankings["protocols"].items():
            if k not in curves and p.get("cmc"):
                curves[k] = list(p["cmc"])
    parts = ['<section id="cmc"><h2>CMC curves</h2>']
    if not curves:
        parts.append('<p class="note">No CMC curve in metrics.json or rankings.json.</p></section>')
        return "".join(parts)
    titles = report.sections
    fig = _new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - lazy: matplotlib

    styles = ("-", "--", ":", "-.")  # overlapping curves stay distinguishable
    for j, (k, c) in enumerate(curves.items()):
        y = np.asarray(c, dtype=float) * 100.0
        x = np.arange(1, len(y) + 1)
        ax.plot(x, y, styles[j % len(styles)], marker="o" if len(y) <= 25 else None, markersize=3,
                label=titles.get(k, k))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank k")
    ax.set_ylabel(report.cmc_ylabel)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Cumulative matching characteristic")
    parts.append(_img(_figure_uri(fig), "CMC curves"))
    parts.append('<p class="note">Percent of queries whose first true match is ranked within the first k '
                 "gallery items.</p></section>")
    return "".join(parts)


def _ranked_section(run: Path, rankings: dict[str, Any] | None, report: ReportSpec, samples: int, worst: int,
                    seed: int, thumb: int) -> str:
    parts = ['<section id="rankings"><h2>Ranked lists</h2>']
    if rankings is None:
        parts.append('<p class="warn">Ranked lists are unavailable: this run folder has no (readable) rankings.json '
                     "-- it was evaluated before sarbridge saved per-query rankings. Re-run the evaluation "
                     "(sarbridge evaluate --model RUN/best.pt --out RUN --overwrite, or sarbridge geo evaluate) and then "
                     "sarbridge report again.</p></section>")
        return "".join(parts)
    score = rankings.get("score") or {}
    # the yellow entry only where a near miss can occur (overlapping map patches), never on re-ID runs
    has_near = any(isinstance(t, dict) and t.get("status") == "neighbour"
                   for proto in rankings["protocols"].values() if isinstance(proto, dict)
                   for q in proto.get("queries") or [] if isinstance(q, dict) for t in q.get("top") or [])
    parts.append('<p class="legend"><span style="background:#1eaa3c">green: match (same identity / true location)</span>'
                 + ('<span style="background:#f5c800;color:#222">yellow: overlapping neighbour</span>' if has_near else "")
                 + '<span style="background:#d72323">red: wrong</span></p>')
    what = "distance (d, smaller is better)" if not score.get("higher_is_better") else "similarity (s, larger is better)"
    parts.append(f'<p class="note">Each row: the query, then its top-{_e(rankings.get("top_k", 10))} gallery items. '
                 f"Score: {_e(what)}; {_e(score.get('description', ''))}. {_prose(report.ranked_note)}</p>")
    images = _Images(run)
    titles = report.sections
    for name, proto in rankings["protocols"].items():
        queries = proto.get("queries") or []
        title = titles.get(name, proto.get("title", name))
        parts.append(f"<h3>{_e(title)} <span class='note'>({_e(_query_count(queries))})</span></h3>")
        sampled, bad = select_queries(queries, samples, worst, seed, need_thumb=report.need_thumb)
        for label, picks in (("sampled queries", sampled), ("worst queries (lowest AP)", bad)):
            if not picks:
                parts.append(f'<p class="note">{_e(label)}: none to show.</p>')
                continue
            before = len(images.missing)
            rows = _ranked_rows(proto, picks, report, images)
            caption = f"{title}: {label}" + (f" (seed {seed})" if label.startswith("sampled") else "")
            parts.append(f"<h4>{_e(caption)}</h4>" + _img(_ranked_figure(rows, caption, thumb), caption))
            parts.append(_query_details(proto, picks, report, images.missing[before:]))
    parts.append("</section>")
    return "".join(parts)


def _query_count(queries: list[Any]) -> str:
    """The ranked-list heading's count, as the metrics table counts: queries with a gallery match
    (a scored AP), and how many more are listed without one."""
    scored = sum(1 for q in queries if isinstance(q, dict) and q.get("ap") is not None)
    unmatched = len(queries) - scored
    return f"{scored} queries" + (f"; {unmatched} more without a gallery match, not scored" if unmatched else "")


def _query_details(proto: dict[str, Any], picks: list[int], report: ReportSpec, missing: list[str]) -> str:
    rows = []
    for n, i in enumerate(picks):
        q = proto["queries"][i]
        where = q.get("path") or q.get("source") or ""
        statuses = " ".join({"match": "G", "neighbour": "Y"}.get(t.get("status"), "R") for t in q.get("top") or [])
        ap = q.get("ap")
        extra = [q.get(field) for _, field in report.query_columns]
        rows.append([n + 1, where, q.get("id"), f"{ap:.3f}" if isinstance(ap, (int, float)) else "n/a", *extra,
                     q.get("first_match_rank") or "none in list", statuses])
    header = ["row", "query", "id", "AP", *[title for title, _ in report.query_columns], "first match rank",
              "top-k (G/Y/R)"]
    out = "<details><summary>queries of this figure</summary>" + _table(header, rows, left=2)
    if missing:
        out += '<p class="warn">Missing or unreadable image files (grey placeholders):</p><pre>' + \
            _e("\n".join(dict.fromkeys(missing))) + "</pre>"
    return out + "</details>"


def _figures_section(run: Path, report: ReportSpec) -> str:
    """The task's own figures of the run folder (e.g. the registration's matching surfaces), when present."""
    found = [(run / name, caption) for name, caption in report.figures if (run / name).is_file()]
    if not found:
        return ""
    parts = ['<section id="figures"><h2>Task figures</h2>']
    for path, caption in found:
        parts.append(f"<h4>{_e(path.name)}</h4>" + _img(_data_uri(path.read_bytes()), path.name)
                     + f'<p class="note">{_e(caption)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _unit_panels(title: str, keys: list[str]) -> list[tuple[str, list[str]]]:
    """Split a panel's keys by unit: metres (``*_m``) get their own panel, never an axis shared with percentages."""
    metres = [k for k in keys if k.endswith("_m")]
    rest = [k for k in keys if k not in metres]
    if not metres or not rest:
        return [(f"{title} (metres)" if metres else title, keys)]
    return [(title, rest), (f"{title} (metres)", metres)]


def _curves_figure(log: list[dict[str, Any]], title: str) -> str | None:
    numeric = [k for k in dict.fromkeys(k for r in log for k in r)
               if k not in ("epoch", "steps") and any(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                                      for r in log)]
    counters = ("step", "time", "seconds", "samples", "images")
    losses = [k for k in numeric if not k.startswith("val_") and k != "lr" and not any(c in k for c in counters)]
    vals = [k for k in numeric if k.startswith("val_")]
    panels = [(t, ks) for t, ks in (("loss terms", losses), *_unit_panels("validation", vals),
                                    ("learning rate", ["lr"] if "lr" in numeric else [])) if ks]
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - lazy: matplotlib

    fig = _new_figure(4.2 * len(panels), 3.4)
    for j, (ptitle, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        for k in keys:
            pts = [(int(r.get("epoch", n)) + 1, float(r[k])) for n, r in enumerate(log)
                   if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", markersize=3, label=k)
        ax.set_xlabel("epoch")
        epochs = sorted({int(r.get("epoch", n)) + 1 for n, r in enumerate(log)})
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(ptitle, fontsize=10)
        ax.grid(alpha=0.3)
        if ptitle == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _figure_uri(fig)


def _training_section(run: Path) -> str:
    parts = ['<section id="training"><h2>Training curves</h2>']
    found = False
    for label, rel in _LOGS:
        log = _read_log(run / rel)
        if not log:
            continue
        found = True
        uri = _curves_figure(log, f"{label} ({rel})")
        if uri:
            parts.append(_img(uri, f"training curves: {label}"))
        last = log[-1]
        parts.append(f'<p class="note">{_e(rel)}: {len(log)} epochs; last: '
                     + _e(", ".join(f"{k}={_fmt(v, 4)}" for k, v in last.items())) + "</p>")
    if not found:
        parts.append('<p class="note">No train_log.jsonl in this run folder (an evaluation-only run).</p>')
    parts.append("</section>")
    return "".join(parts)


def _analysis_section(run: Path) -> str:
    path = run / "analysis.json"
    if not path.is_file():
        return ""
    data = _read_json(path)
    parts = ['<section id="analysis"><h2>Analysis</h2>']
    if not isinstance(data, dict):
        parts.append('<p class="warn">analysis.json could not be read as a JSON object.</p></section>')
        return "".join(parts)
    stages = data.get("stages")
    if isinstance(stages, dict) and stages:
        # one row per measure, one column per stage (e.g. before / after training)
        names = list(stages)
        metrics = list(dict.fromkeys(k for v in stages.values() if isinstance(v, dict) for k in v))
        rows = [[m, *[(stages[n].get(m) if isinstance(stages[n], dict) else None) for n in names]] for m in metrics]
        rows = [[r[0], *[x if isinstance(x, (int, float, str)) or x is None else json.dumps(x) for x in r[1:]]]
                for r in rows]
        parts.append(_table(["measure", *names], rows, fmt=_fmt_measure))
    for name in data.get("images") or []:
        p = Path(str(name))
        p = p if p.is_absolute() else run / p
        mime = _IMAGE_MIME.get(p.suffix.lower())
        if mime and p.is_file():
            parts.append(f"<h4>{_e(p.name)}</h4>" + _img(_data_uri(p.read_bytes(), mime), p.name))
        else:
            parts.append(f'<p class="warn">image {_e(name)} not found in the run folder (or not PNG/JPEG/GIF).</p>')
    rest = {k: v for k, v in data.items() if k not in ("stages", "images")}
    if rest:
        parts.append("<details><summary>other analysis fields</summary><pre>"
                     + _e(json.dumps(rest, indent=2, default=str)) + "</pre></details>")
    parts.append("</section>")
    return "".join(parts)


def _config_section(run: Path) -> str:
    path = run / "config.yaml"
    parts = ['<section id="config"><h2>Resolved config</h2>']
    try:
        parts.append(f"<pre>{_e(path.read_text(encoding='utf-8'))}</pre>")
    except OSError:
        parts.append('<p class="note">No config.yaml in this run folder.</p>')
    parts.append("</section>")
    return "".join(parts)


def _run_name(run: Path) -> str:
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        if isinstance(cfg, dict) and cfg.get("name"):
            return str(cfg["name"])
    except Exception:  # no or unreadable config: the folder name
        pass
    return run.resolve().name


def _header(run: Path, metrics: dict[str, Any], report: ReportSpec) -> str:
    meta = metrics.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    evaluated = datetime.fromtimestamp((run / "metrics.json").stat().st_mtime, tz=UTC)
    facts = [
        ("run folder", str(run.resolve())),
        ("task", report.title),
        ("report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("evaluated", evaluated.strftime("%Y-%m-%d %H:%M UTC")),
        ("device", meta.get("device", "n/a")),
        ("checkpoint", meta.get("checkpoint", "n/a")),
        ("selected epoch", meta.get("selected_epoch", meta.get("epoch", "n/a"))),
        ("data", meta.get("data", "n/a")),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("metrics", "metrics"), ("cmc", "CMC"), ("rankings", "ranked lists"), ("training", "training"),
        ("analysis", "analysis"), ("config", "config")))
    return f"<header><h1>sarbridge report: {_e(_run_name(run))}</h1><dl>{dl}</dl><nav>{nav}</nav></header>"


def build_report_html(run_dir: str | Path, samples: int = 8, worst: int = 8, seed: int = 0, thumb: int = 96) -> str:
    """The report page of a run folder as a string (see :func:`write_report`)."""
    run = Path(run_dir)
    if samples < 0 or worst < 0:
        raise SarbridgeError(f"--samples and --worst must be >= 0, got {samples} and {worst}", "pass 0 or more")
    metrics = _load_metrics(run)
    rankings = load_rankings(run)
    report = report_task(metrics, str(rankings["task"]) if rankings else None).report
    assert report is not None  # report_task only returns tasks with a report
    body = [
        _header(run, metrics, report),
        "<main>",
        _metrics_section(metrics, report),
        _cmc_section(metrics, rankings, report),
        _ranked_section(run, rankings, report, samples, worst, seed, thumb),
        _figures_section(run, report),
        _training_section(run),
        _analysis_section(run),
        _config_section(run),
        '<p class="note">Generated by sarbridge report; self-contained (all images embedded).</p>',
        "</main>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>sarbridge report: {_e(_run_name(run))}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(run_dir: str | Path, samples: int = 8, worst: int = 8, seed: int = 0, thumb: int = 96) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path.

    Args:
        run_dir: a run folder of ``sarbridge train``/``eval``/``demo`` or ``geo train``/``evaluate``/``demo``.
        samples: queries drawn at random (seeded) per protocol for the ranked lists.
        worst: queries with the lowest AP shown per protocol.
        seed: seed of the random draw.
        thumb: thumbnail side (pixels) in the ranked-list pictures.

    Returns:
        The path of ``report.html``.

    Raises:
        SarbridgeError: the folder does not exist or has no readable ``metrics.json``, or
            ``samples`` / ``worst`` is negative.
    """
    run = Path(run_dir)
    page = build_report_html(run, samples=samples, worst=worst, seed=seed, thumb=thumb)
    out = run / REPORT_FILE
    atomic_write_text(out, page)
    return out


__all__ = ["REPORT_FILE", "build_report_html", "placeholder_image", "write_report"]
