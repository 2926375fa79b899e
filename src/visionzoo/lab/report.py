"""`visionzoo lab report`: join every results/lab/CLAIM.json into REPORT.md and REPORT.html."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from visionzoo.lab.core import CLAIMS
from visionzoo.utils import atomic_write_text

BADGE = {
    "reproduced": "#2e7d32",
    "partly reproduced": "#f9a825",
    "not reproduced": "#c62828",
    "inconclusive": "#757575",
}


BUDGET_ORDER = ("full", "quick", "smoke")  # the first present is a claim's shown result


def load_results(folder: Path) -> list[dict[str, Any]]:
    """The claim results in `folder` (one per claim and budget, the newest where a claim has
    two files for one budget), in the lab's claim order (unknown names last)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and {"claim", "verdict", "summary"} <= set(data):
            key = (data["claim"], str(data.get("budget")))
            if key not in latest or data.get("created", "") >= latest[key].get("created", ""):
                latest[key] = data
    order = {name: i for i, name in enumerate(CLAIMS)}
    rank = {b: i for i, b in enumerate(BUDGET_ORDER)}

    def position(r: dict[str, Any]) -> tuple[int, str, int]:
        return order.get(r["claim"], len(order)), r["claim"], rank.get(str(r.get("budget")), 9)

    return sorted(latest.values(), key=position)


def by_claim(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each claim's results, its most complete budget first."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        grouped.setdefault(r["claim"], []).append(r)
    return grouped


def _primary(r: dict[str, Any]) -> str:
    """'+0.52 pp [+0.21, +0.83], 5 seeds; flags' for the primary sub-claim (older results: the
    summary)."""
    p = r.get("primary")
    if not p:
        return r["summary"]
    k, unit = (100, " pp") if p.get("unit", "pp") == "pp" else (1, p.get("unit", ""))
    text = (
        f"{p['name']}: {k * p['effect']:+.2f}{unit} [{k * p['lo']:+.2f}, {k * p['hi']:+.2f}],"
        f" {p['seeds']} seeds"
    )
    return text + (f"; {'; '.join(p['flags'])}" if p.get("flags") else "")


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
        "(`docs/lab.md`): a claim's headline is its one primary sub-claim, decided by a 95% "
        "interval on differences paired by seed; validity gates make it inconclusive.",
        "",
        "| claim | verdict | budget | primary sub-claim: effect [95% interval], seeds; flags "
        "| other budget | dataset | time |",
        "|---|---|---|---|---|---|---|",
    ]
    grouped = by_claim(results)
    for name, rs in grouped.items():
        r, others = rs[0], rs[1:]
        other = "; ".join(f"{o.get('budget')}: {o['verdict']}" for o in others) or "-"
        lines.append(
            f"| [{name}](#{name}) | **{r['verdict']}** | {r.get('budget')} "
            f"| {_primary(r).replace('|', '/')} | {other} | {r.get('dataset')} | {_time(r)} |"
        )
    missing = [n for n in CLAIMS if n not in grouped]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)} (`visionzoo lab run NAME`)."]
    results = [rs[0] for rs in grouped.values()]
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
        for sub in r.get("secondary", []):
            lines.append(
                f"- Secondary (not in the headline): {sub['name']}: {sub['verdict']} "
                f"({sub['reason']})"
            )
        for key, value in r.get("facts", {}).items():
            lines.append(f"- Fact (not evidence): {key}: {value}")
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
    results = [rs[0] for rs in by_claim(results).values()]
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
            *[("Secondary", f"{x['name']}: {x['verdict']}") for x in r.get("secondary", [])],
            *[("Fact", f"{k}: {v}") for k, v in r.get("facts", {}).items()],
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
    atomic_write_text(md, markdown(results))
    atomic_write_text(page, to_html(results))
    return md, page, len(results)
