"""A self-contained HTML report of a run or a sweep, written from its output files.

One file, no network: plots are inline SVG images, tables are HTML, and no script
runs. Per group of runs (a sweep given by flags has one; a grid has one per
dataset and setting) it shows the runs, the scores, the learning curves, the
paired differences against the first method (``mlecs`` when present), a
per-device breakdown (modality set, encoder family, scores), the modality
coverage of every device (held modalities and the share of samples missing
each), and the communication ledger per round.

Usage::

    python -m experiments.report outputs/hapt_scarce_skew --out reports/hapt_scarce_skew
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.atomic import write_text
from experiments import stats
from experiments.devices import device_tail
from experiments.report_sources import Device, Groups, Run, devices, modality_names

TABLE_METRICS = ("client_f1", "client_rouge_lsum", "server_f1", "server_rouge_lsum")
CURVE_METRICS = ("client_f1", "client_rouge_lsum", "server_f1")
LEDGER_KINDS = ("lora", "prompt", "encoder", "reps")
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
td.none{background:#eee;color:#999;text-align:center}
img{max-width:100%;display:block;margin:.5em 0}
.note{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 .2em}
"""


def esc(text: object) -> str:
    """``text`` escaped for HTML."""
    return html.escape(str(text), quote=True)


def inline(text: str) -> str:
    """Markdown inline marks of the statistics tables (bold, code) as HTML."""
    text = re.sub(r"\*\*(.+?)\*\*(?!\*)", r"<strong>\1</strong>", esc(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_html(md: str) -> str:
    """The pipe tables and paragraphs of ``experiments.stats``'s markdown as HTML."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append("</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.strip():
            out.append(f'<p class="note">{inline(line)}</p>')
    flush()
    return "\n".join(out)


def table(header: list[str], body: list[list[object]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (pre-rendered ``<td>`` cells)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    lines = [f"<table><tr>{head}</tr>"]
    for row in body:
        cells = "".join(c if raw else f"<td>{esc(c)}</td>" for c in row)
        lines.append(f"<tr>{cells}</tr>")
    return "\n".join(lines + ["</table>"])


def svg_image(draw: Callable[[Path], None], alt: str) -> str:
    """An ``<img>`` holding the SVG that ``draw(path)`` writes (nothing if it writes none)."""
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller files
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.svg"
        draw(path)
        if not path.exists():
            return ""
        data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">'


def fmt(value: float | None, digits: int = 3) -> str:
    """A score for a table cell (``n/a`` when absent)."""
    return "n/a" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def runs_section(by_method: dict[str, list[Run]]) -> str:
    """Which runs the group holds: seeds, rounds, devices, wall-clock time."""
    body = []
    for method, runs in by_method.items():
        seconds = [float(r.summary["seconds"]) for r in runs if "seconds" in r.summary]
        body.append(
            [
                method,
                ", ".join(str(r.seed) for r in runs),
                "/".join(sorted({str(r.summary.get("rounds", "?")) for r in runs})),
                "/".join(sorted({str(r.summary.get("num_nodes", "?")) for r in runs})),
                fmt(float(np.mean(seconds)), 0) if seconds else "n/a",
            ]
        )
    return table(["method", "seeds", "rounds", "devices", "seconds per run"], body)


def scores_section(by_method: dict[str, list[Run]]) -> str:
    """Tail scores per method (mean ± std over seeds) and the learning curves."""
    summaries = {m: [r.summary for r in runs] for m, runs in by_method.items()}
    histories = {m: [r.rounds for r in runs] for m, runs in by_method.items()}
    parts = [
        '<p class="note">Tail: mean of the last rounds of each run; mean ± std over seeds.</p>',
        markdown_html(stats.summary_table(summaries, "tail")),
    ]
    for metric in CURVE_METRICS:
        if any(metric in r for h in histories.values() for rs in h for r in rs):
            parts.append(f"<h3>{esc(metric)} per round</h3>")
            parts.append(
                svg_image(
                    lambda p, m=metric: stats.plot_curves(histories, m, p), f"{metric} curves"
                )
            )
    return "\n".join(parts)


def diffs_section(by_method: dict[str, list[Run]]) -> str:
    """Paired differences of the tail scores, against the first method and for every pair."""
    summaries = {m: [r.summary for r in runs] for m, runs in by_method.items()}
    if len(summaries) < 2:
        return '<p class="note">One method: no paired differences.</p>'
    first = next(iter(summaries))
    plot = svg_image(
        lambda p: stats.plot_diffs(summaries, "client_f1", first, p), "paired differences"
    )
    return plot + "\n" + markdown_html(stats.diff_table(summaries, TABLE_METRICS))


class DeviceFacts:
    """Each run's devices, built once per seed and data setting (methods share them)."""

    def __init__(self) -> None:
        self._cache: dict[str, list[Device]] = {}

    def __call__(self, run: Run) -> list[Device]:
        config = {
            k: v
            for k, v in run.run_config.items()
            if k not in ("method", "run-name", "output-dir", "resume")
        }
        key = json.dumps([config, run.summary.get("num_nodes")], sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = devices(run)
        return self._cache[key]


def devices_section(by_method: dict[str, list[Run]], facts: DeviceFacts, tail: int) -> str:
    """Tail client macro-F1 by device profile (modality set and encoders), then per seed."""
    profiles: dict[str, dict[str, list[float]]] = {}
    per_seed: dict[int, dict[int, dict[str, float]]] = {}
    seed_devices: dict[int, list[Device]] = {}
    for method, runs in by_method.items():
        for run in runs:
            found = facts(run)
            seed_devices.setdefault(run.seed, found)
            scores = device_tail(run.rounds, "f1", tail)
            for d in found:
                if d.partition_id in scores:
                    name = f"{'+'.join(d.modalities) or '?'} · {d.encoders}"
                    profiles.setdefault(name, {}).setdefault(method, []).append(
                        scores[d.partition_id]
                    )
                    per_seed.setdefault(run.seed, {}).setdefault(d.partition_id, {})[method] = (
                        scores[d.partition_id]
                    )
    methods = list(by_method)
    body = [
        [name, max(len(v) for v in by.values())]
        + [fmt(float(np.mean(by[m]))) if m in by else "n/a" for m in methods]
        for name, by in sorted(profiles.items())
    ]
    parts = [
        f'<p class="note">Tail client macro-F1 (mean of each device\'s last {tail} scored '
        "rounds), averaged over the devices of each profile and over seeds.</p>",
        table(["modalities · encoders", "device-runs"] + methods, body),
    ]
    for i, (seed, rows) in enumerate(sorted(per_seed.items())):
        found = {d.partition_id: d for d in seed_devices[seed]}
        body = [
            [pid, "+".join(found[pid].modalities) or "?", found[pid].encoders]
            + [fmt(scores.get(m)) for m in methods]
            for pid, scores in sorted(rows.items())
        ]
        header = ["device", "modalities", "encoders"] + methods
        parts.append(
            f"<details{' open' if i == 0 else ''}><summary>seed {seed}: each device</summary>"
            + table(header, body)
            + "</details>"
        )
    return "\n".join(parts)


def coverage_section(by_method: dict[str, list[Run]], facts: DeviceFacts) -> str:
    """Devices x modalities per seed: held or not, and the share of samples missing it."""
    seen: dict[int, Run] = {}
    for runs in by_method.values():
        for run in runs:
            seen.setdefault(run.seed, run)
    parts = []
    for i, (seed, run) in enumerate(sorted(seen.items())):
        names = modality_names(run)
        found = facts(run)
        if not names or any(d.missing is None for d in found):
            parts.append(
                f'<p class="note">seed {seed}: the devices\' data could not be rebuilt '
                "here (dataset package missing or modalities declared per node).</p>"
            )
            continue
        body = []
        for d in found:
            cells = [f"<td>{d.partition_id}</td>"]
            for m in names:
                if m not in d.modalities:
                    cells.append('<td class="none">—</td>')
                    continue
                share = d.missing[m]
                shade = int(255 - 120 * (1 - share))  # greener where more samples hold it
                cells.append(
                    f'<td style="background:rgb({shade},255,{shade})">held, '
                    f"{share:.0%} missing</td>"
                )
            body.append(cells)
        holding = ["<td>devices holding it</td>"] + [
            f"<td>{sum(m in d.modalities for d in found)} of {len(found)}</td>" for m in names
        ]
        parts.append(
            f"<details{' open' if i == 0 else ''}><summary>seed {seed}</summary>"
            + table(["device"] + list(names), body + [holding], raw=True)
            + "</details>"
        )
    return "\n".join(parts)


def ledger(run: Run, key: str) -> list[float]:
    """``comm[key]`` per round of ``run`` (rounds without a ledger are skipped)."""
    return [float(r["comm"][key]) for r in run.rounds if key in (r.get("comm") or {})]


def plot_ledger(by_method: dict[str, list[Run]], path: Path) -> None:
    """Bytes up and down per device per round, mean over seeds, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.2, 3.4))
    for i, (method, runs) in enumerate(by_method.items()):
        for key, style in (
            ("bytes_up_per_client_round", "-"),
            ("bytes_down_per_client_round", ":"),
        ):
            series = [ledger(r, key) for r in runs]
            n = min((len(s) for s in series), default=0)
            if n:
                mean = np.mean([s[:n] for s in series], axis=0) / 1e3
                label = f"{method} {'up' if style == '-' else 'down'}"
                ax.plot(range(1, n + 1), mean, style, color=f"C{i % 10}", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("kB per device")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def comm_section(by_method: dict[str, list[Run]]) -> str:
    """The communication ledger: per method by payload kind, then per round."""
    body = []
    for method, runs in by_method.items():
        row: list[object] = [method]
        for direction in ("up", "down"):
            for kind in LEDGER_KINDS:
                values = [v for r in runs for v in ledger(r, f"bytes_{kind}_{direction}")]
                row.append(fmt(float(np.mean(values)) / 1e3, 1) if values else "n/a")
        ratios = [v for r in runs for v in ledger(r, "ratio")]
        row.append(f"{np.mean(ratios):.2%}" if ratios else "n/a")
        body.append(row)
    header = ["method"] + [f"{k} {d} (kB)" for d in ("up", "down") for k in LEDGER_KINDS]
    parts = [
        '<p class="note">Bytes per device and round, mean over rounds and seeds, by payload '
        "kind; the ratio is bytes up per device and round over the edge model's size.</p>",
        table(header + ["ratio"], body),
        svg_image(lambda p: plot_ledger(by_method, p), "communication per round"),
    ]
    for method, runs in by_method.items():
        up = [ledger(r, "bytes_up_per_client_round") for r in runs]
        down = [ledger(r, "bytes_down_per_client_round") for r in runs]
        n = min((len(s) for s in up + down), default=0)
        rows = [
            [
                k + 1,
                fmt(np.mean([s[k] for s in up]) / 1e3, 1),
                fmt(np.mean([s[k] for s in down]) / 1e3, 1),
            ]
            for k in range(n)
        ]
        parts.append(
            f"<details><summary>{esc(method)}: each round</summary>"
            + table(["round", "up (kB per device)", "down (kB per device)"], rows)
            + "</details>"
        )
    return "\n".join(parts)


def render(groups: Groups, source: Path, tail: int = 5) -> str:
    """The report's HTML for ``groups`` (read from ``source``)."""
    facts = DeviceFacts()
    count = sum(len(runs) for g in groups.values() for runs in g.values())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ML-ECS report: {esc(source.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>ML-ECS report: {esc(source)}</h1>",
        f'<p class="note">{count} runs, read from their summary.json, rounds.jsonl and '
        f"config.json files on {time.strftime('%Y-%m-%d %H:%M')}.</p>",
    ]
    sections = (
        ("Runs", runs_section),
        ("Scores", scores_section),
        ("Paired differences", diffs_section),
        ("Devices", lambda b: devices_section(b, facts, tail)),
        ("Modality coverage", lambda b: coverage_section(b, facts)),
        ("Communication", comm_section),
    )
    for group, by_method in groups.items():
        if len(groups) > 1 or group not in ("default", "run"):
            parts.append(f"<h2>{esc(group)}</h2>")
        for title, section in sections:
            parts.append(f"<h3>{title}</h3>\n{section(by_method)}")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(groups: Groups, source: Path, out: Path) -> Path:
    """Write ``out/report.html`` for ``groups``; return its path."""
    path = out / "report.html"
    write_text(path, render(groups, source))
    return path
