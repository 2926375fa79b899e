"""Command-line front end (filled in by the spine's engine and data work)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("visionzoo: command line coming with the engine", file=sys.stderr)
    return 1
