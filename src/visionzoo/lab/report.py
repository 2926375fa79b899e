"""`visionzoo lab report`: join every results/lab/CLAIM.json into REPORT.md and REPORT.html."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from visionzoo.lab.core import CLAIMS

BADGE = {
    "reproduced": "#2e7d32",
    "partly reproduced": "#f9a825",
    "not reproduced": "#c62828",
    "inconclusive": "#757575",
}


def load_results(folder: Path) -> list[dict[str, Any]]:
    """The claim results in `folder`, in the lab's claim order (unknown names last)."""
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and {"claim", "verdict", "summary"} <= set(data):
            results.append(data)
    order = {name: i for i, name in enumerate(CLAIMS)}
    return sorted(results, key=lambda r: (order.get(r["claim"], len(order)), r["claim"]))


def _env_line(env: dict[str, Any]) -> str:
    return (
        f"torch {env.get('torch')}, {env.get('cpu')}, {env.get('torch_threads')} threads, "
        f"commit {str(env.get('git_commit'))[:10]}"
    )


def _time(r: dict[str, Any]) -> str:
    """Wall time and the CPU it ran on (claims run on different machines are not alike)."""
    cpu = str(r.get("environment", {}).get("cpu") or "?")
    cpu = " ".join(w for w in cpu.replace("(R)", "").split() if w != "Processor")
    return f"{r.get('elapsed_s', 0):.0f} s, {cpu}"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# The history lab: verdicts",
        "",
        "Each landmark paper's key claim, re-run through visionzoo's one training engine with "
        "the same recipe for every arm. Verdicts follow rules fixed in code before the runs "
        "(`docs/lab.md`); a difference counts only beyond 2 standard errors.",
        "",
        "| claim | verdict | budget | dataset | measured | time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        summary = r["summary"].replace("|", "/")
        lines.append(
            f"| [{r['claim']}](#{r['claim']}) | **{r['verdict']}** | {r.get('budget')} "
            f"| {r.get('dataset')} | {summary} | {_time(r)} |"
        )
    missing = [n for n in CLAIMS if n not in {r["claim"] for r in results}]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)} (`visionzoo lab run NAME`)."]
    for r in results:
        lines += [
            "",
            f"## {r['claim']}",
            "",
            f"**{r.get('title', '')}**",
            "",
            f"- Paper: {r.get('paper', '')}",
            f"- Claim: {r.get('quote', '')}",
            f"- Source: {r.get('source', '')}",
            f"- Rule: {r.get('rule', '')}",
            f"- Verdict: **{r['verdict']}**. {r['summary']}",
        ]
        if r.get("sub_verdicts"):
            lines.append(
                "- Sub-claims: " + ", ".join(f"{k}: {v}" for k, v in r["sub_verdicts"].items())
            )
        for note in r.get("scaled_down", []):
            lines.append(f"- Scaled down: {note}")
        lines.append(f"- Models: {', '.join(r.get('models', []))}")
        lines.append(
            f"- Environment: {_env_line(r.get('environment', {}))}; {r.get('runs', 0)} "
            f"training runs, {r.get('elapsed_s', 0):.0f} s"
        )
        if r.get("plot"):
            lines += ["", f"![{r['claim']}]({r['plot']})"]
    return "\n".join(lines) + "\n"


def to_html(results: list[dict[str, Any]]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='#{e(r['claim'])}'>{e(r['claim'])}</a></td>"
        f"<td><span class='v' style='background:{BADGE.get(r['verdict'], '#666')}'>"
        f"{e(r['verdict'])}</span></td><td>{e(str(r.get('budget')))}</td>"
        f"<td>{e(str(r.get('dataset')))}</td><td>{e(r['summary'])}</td>"
        f"<td>{e(_time(r))}</td></tr>"
        for r in results
    )
    sections = []
    for r in results:
        items = [
            ("Paper", r.get("paper", "")),
            ("Claim", r.get("quote", "")),
            ("Source", r.get("source", "")),
            ("Rule", r.get("rule", "")),
            ("Measured", r["summary"]),
        ]
        items += [("Scaled down", n) for n in r.get("scaled_down", [])]
        items += [("Environment", _env_line(r.get("environment", {})))]
        body = "".join(f"<li><b>{e(k)}:</b> {e(str(v))}</li>" for k, v in items)
        img = f"<img src='{e(r['plot'])}' alt='{e(r['claim'])} plot'>" if r.get("plot") else ""
        sections.append(
            f"<section id='{e(r['claim'])}'><h2>{e(r['claim'])}: "
            f"{e(r.get('title', ''))}</h2><p class='v' style='background:"
            f"{BADGE.get(r['verdict'], '#666')}'>{e(r['verdict'])}</p><ul>{body}</ul>"
            f"{img}</section>"
        )
    style = (
        "body{font:14px system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}.v{color:#fff;padding:2px 8px;border-radius:4px;display:"
        "inline-block}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>visionzoo lab report"
        f"</title><style>{style}</style></head><body><h1>The history lab: verdicts</h1>"
        f"<table><tr><th>claim</th><th>verdict</th><th>budget</th><th>dataset</th>"
        f"<th>measured</th><th>time</th></tr>{rows}</table>{''.join(sections)}</body></html>\n"
    )


def build_report(folder: str | Path = "results/lab") -> tuple[Path, Path, int]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    results = load_results(folder)
    md, page = folder / "REPORT.md", folder / "REPORT.html"
    md.write_text(markdown(results))
    page.write_text(to_html(results))
    return md, page, len(results)
