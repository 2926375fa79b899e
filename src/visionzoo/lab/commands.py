"""`visionzoo lab list | run CLAIM | report`."""

from __future__ import annotations

import argparse
import shlex
import tempfile

from visionzoo.errors import UserError


def register(subparsers) -> None:
    lab = subparsers.add_parser("lab", help="re-run landmark papers' key claims (history lab)")
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])

    p = sub.add_parser("list", help="the claims, their papers and their last verdicts")
    p.add_argument("--out", default="results/lab", help="where results are (default: %(default)s)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run one claim (or 'all') and write CLAIM.json and CLAIM.png")
    p.add_argument("claim", help="claim name (see `visionzoo lab list`) or 'all'")
    p.add_argument(
        "--budget",
        default="quick",
        choices=("smoke", "quick", "full"),
        help="smoke: seconds (tests); quick: <= 15 min on 2 CPU cores; full: "
        "paper-faithful, for a GPU (default: %(default)s)",
    )
    p.add_argument(
        "--dataset",
        default="fashion-mnist",
        help="training data (default: %(default)s; cifar10 where you have it)",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the budget's)")
    p.add_argument("--data-dir", default=None, help="extra folder with dataset files")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: results/lab; a new temporary folder for smoke runs)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="run claims whose result for this budget exists (default: skip them, so a "
        "long run resumes claim by claim)",
    )
    p.add_argument("--keep-runs", action="store_true", help="keep run folders under OUT/runs/")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="join the results into REPORT.md and REPORT.html")
    p.add_argument("--out", default="results/lab", help="results folder (default: %(default)s)")
    p.set_defaults(func=cmd_report)


def cmd_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from visionzoo.lab import CLAIMS
    from visionzoo.lab.report import load_results

    done: dict[str, list[str]] = {}
    if Path(args.out).is_dir():
        for r in load_results(Path(args.out)):
            done.setdefault(r["claim"], []).append(f"{r['verdict']} ({r.get('budget')})")
    for name, c in CLAIMS.items():
        status = ", ".join(done.get(name, ["not run"]))
        print(f"{name:<13} {c.title}")
        print(f"{'':<13} {c.paper[:70]} | last: {status}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from visionzoo.lab import CLAIMS, run_claim

    names = list(CLAIMS) if args.claim == "all" else [args.claim]
    if args.claim != "all" and args.claim not in CLAIMS:
        raise UserError(f"unknown claim {args.claim!r}; known: {', '.join(CLAIMS)}, all")
    console = Console()
    if args.out is None and args.budget == "smoke":
        args.out = tempfile.mkdtemp(prefix="visionzoo-lab-smoke-")
    command = command_line(args)
    for i, name in enumerate(names, 1):
        if len(names) > 1:
            console.print(f"[bold]({i}/{len(names)}) {name}[/bold]")
        result = run_claim(
            name,
            budget=args.budget,
            dataset=args.dataset,
            seeds=args.seeds,
            data_dir=args.data_dir,
            out=args.out,
            quiet=args.quiet,
            console=console,
            keep_runs=args.keep_runs,
            force=args.force,
            command=command,
        )
        if result.get("skipped"):
            console.print(f"{name}: {result['verdict']} ({args.budget} result exists; --force)")
            continue
        console.print(f"{name}: [bold]{result['verdict']}[/bold]. {result['summary']}")
        console.print(f"wrote {result['path']} ({result['elapsed_s']:.0f} s)")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The `visionzoo lab run` command that reproduces this run, every option spelled out."""
    words = ["visionzoo", "lab", "run", args.claim, "--budget", args.budget]
    words += ["--dataset", args.dataset, "--out", args.out or "results/lab"]
    for flag, value in (("--seeds", args.seeds), ("--data-dir", args.data_dir)):
        if value is not None:
            words += [flag, str(value)]
    for flag, on in (("--force", args.force), ("--keep-runs", args.keep_runs)):
        if on:
            words.append(flag)
    return shlex.join(words)


def cmd_report(args: argparse.Namespace) -> int:
    from visionzoo.lab.report import build_report

    md, page, n = build_report(args.out)
    print(f"wrote {md} and {page} ({n} claims)")
    return 0
