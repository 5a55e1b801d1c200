"""The results as a Markdown table and as a JSON file (no MLflow: plain files to read and diff)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _rate(value: float, unit: str) -> str:
    if unit == "FLOP":
        return f"{value / 1e9:,.1f} GFLOP/s"
    return f"{value:,.1f} {unit}/s" if value < 100 else f"{value:,.0f} {unit}/s"


def _side(side: dict[str, Any]) -> str:
    if "median_s" not in side:
        return "—"
    return f"{_rate(side['throughput_per_s'], side['unit'])} ({side['median_s'] * 1000:,.0f} ms)"


def _memory(side: dict[str, Any]) -> str:
    memory = side.get("memory")
    if memory is None:
        return "—"
    if "skipped" in memory:
        return "n/a"
    return f"{memory['peak_mib']:,.0f}"


def _status(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"**not measured**: {row['skipped']}"
    work = row.get("equal_work")
    equal = ""
    if work is not None:
        same = "equal" if work["equal"] else "**unequal**"
        equal = f"; {same} work ({work['key']} {work['ours']} / {work['reference']})"
    if row["met"] is None:
        return "(no goal)" + equal
    return ("met" if row["met"] else "**not met**") + equal


def _settings(report: dict[str, Any]) -> str:
    settings = report.get("settings") or {"device": "cpu", "precision": "32", "compile": False}
    compiled = "on (trained models; decoding is not compiled)" if settings["compile"] else "off"
    return f"device {settings['device']}, precision {settings['precision']}, torch.compile {compiled}"


def markdown(report: dict[str, Any]) -> str:
    """The table, with the command and the machine it was measured on."""
    machine = report["machine"]
    lines = [
        f"Measured with `{report['command']}` ({report['size']} sizes), {report['started']} to {report['finished']} UTC.",
        "",
        f"Both sides of every row: {_settings(report)}.",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']} using "
        f"{machine['torch_threads']} thread(s), GPU: {machine['cuda'] or 'none'}; load average "
        f"{machine['loadavg_start'][0]:.2f} at the start, {machine['loadavg_end'][0]:.2f} at the end"
        + (" (the machine was shared with other jobs)." if report.get("shared") else "."),
        "",
        "Ratio: for rates, ours / reference (above 1: ours is faster; the FLOP row: the fraction of the matmul peak); "
        "for step times (\"step time / ...\"), ours / reference (above 1: ours is slower). Each side ran "
        f"{report['repeats']} times, interleaved with the other, after {report['warmup']} warm-up runs; the ours and "
        "reference columns give each side's median. The ratio is the median of the per-round ratios (each round's two "
        "runs are adjacent in time, so load that slows a whole round cancels), with its interquartile range; the ratio "
        "of the two medians is shown beside it. Peak memory: increase of the peak resident set over the after-import "
        "baseline (on a GPU: of CUDA's allocated memory), each workload alone in a fresh process (MiB).",
        "",
        "| row | ours | reference | ratio (IQR) | ratio of medians | goal | status | peak MiB ours / ref |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        ratio, of_medians = "—", "—"
        if "ratio" in row:
            low, high = row["ratio_quartiles"]
            ratio, of_medians = f"**{row['ratio']:.3f}** ({low:.2f}–{high:.2f})", f"{row['ratio_of_medians']:.3f}"
        ours_name, ref_name = row["ours"]["workload"], row["reference"]["workload"]
        lines.append(
            f"| {row['label']} | {_side(row['ours'])}<br>`{ours_name}` | {_side(row['reference'])}<br>`{ref_name}` | "
            f"{ratio} | {of_medians} | {row['goal'] or '—'} | {_status(row)} | {_memory(row['ours'])} / {_memory(row['reference'])} |"
        )
    return "\n".join(lines) + "\n"


def _column(report: dict[str, Any]) -> str:
    settings = report["settings"]
    precision = "float32" if settings["precision"] == "32" else settings["precision"]
    threads = report["machine"]["torch_threads"]
    return precision + (", compiled" if settings["compile"] else "") + (f", {threads} threads" if threads != 1 else "")


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    if "skipped" in row:
        return "not measured"
    low, high = row["ratio_quartiles"]
    mark = "" if row["met"] is None else (" ✓" if row["met"] else " ✗")
    goal = f" (goal {row['goal']})" if row["goal"] else ""
    return f"{row['ratio']:.3f} ({low:.2f}–{high:.2f}){mark}{goal}"


def summary(reports: list[dict[str, Any]], command: str = "python -m benchmarks.gpu") -> str:
    """One table of several runs' ratios, a column per setting (runs of the same setting, e.g. of other groups, share one)."""
    first = reports[0]
    machine = first["machine"]
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    labels: list[str] = []
    for report in reports:
        column = columns.setdefault(_column(report), {})
        for row in report["rows"]:
            column[row["label"]] = row
            if row["label"] not in labels:
                labels.append(row["label"])
    loads = [report["machine"]["loadavg_start"][0] for report in reports] + [report["machine"]["loadavg_end"][0] for report in reports]
    lines = [
        f"Measured with `{command}` ({first['size']} sizes) on {machine['cuda'] or machine['cpu']} "
        f"(CPU: {machine['cpu']}), torch {machine['torch']}, from {min(r['started'] for r in reports)} to "
        f"{max(r['finished'] for r in reports)} UTC, load average {min(loads):.1f} to {max(loads):.1f}. "
        "Ratio (interquartile range), ✓/✗: goal met or not; each run's own table is beside this file.",
        "",
        "| row | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(_cell(rows.get(label)) for rows in columns.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.table OUT.md RUN.json ...``: the summary of runs already made."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m benchmarks.table OUT.md RUN.json [RUN.json ...]")
    reports = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args[1:]]
    command = "; ".join(report["command"] for report in reports)
    Path(args[0]).write_text(summary(reports, command), encoding="utf-8")


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``out`` (``small``, ``small-bf16``, ...); return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    name = report.get("name", report["size"])
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path


__all__ = ["main", "markdown", "summary", "write"]

if __name__ == "__main__":
    main()
