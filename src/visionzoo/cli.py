"""Command-line front end: thin argparse wiring, no logic of its own.

Commands live with the package that implements them: each module in COMMAND_MODULES has a
`register(subparsers)` function that adds its sub-commands and sets `func` on them; `func`
takes the parsed arguments and returns the exit code. A UserError (or any error that a
user's input causes, a bad flag included) is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import NoReturn

from visionzoo import __version__

COMMAND_MODULES = (
    "visionzoo.commands",  # list, data, train, eval, predict
    "visionzoo.bench.commands",  # info, bench, export
    "visionzoo.explorer.commands",  # explore
    "visionzoo.lab.commands",  # lab
)


class BadArguments(Exception):
    """A command line argparse refuses; `main` prints it as one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are exceptions, so that `main` reports them as one line."""

    def error(self, message: str) -> NoReturn:
        flag, _, reason = message.removeprefix("argument ").partition(": ")
        if reason.startswith(flag.split("/")[0] + " "):  # "--x must be ...": said once
            message = reason
        raise BadArguments(f"{message} (see {self.prog} --help)")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="visionzoo",
        description="Every landmark image-classification network: train, measure, explore.",
    )
    parser.add_argument("--version", action="version", version=f"visionzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from visionzoo.convert import WeightMismatchError
    from visionzoo.errors import UserError
    from visionzoo.registry import UnknownModelError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BadArguments as err:
        print(f"visionzoo: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, UnknownModelError, WeightMismatchError) as err:
        print(f"visionzoo: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # fit says where the run stands: "interrupted: resume ..."
        print(f"visionzoo: {one_line(str(err)) or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if os.environ.get("VISIONZOO_DEBUG"):
            raise
        print(f"visionzoo: error: {type(err).__name__}: {one_line(str(err))}", file=sys.stderr)
        print("visionzoo: set VISIONZOO_DEBUG=1 for the full traceback", file=sys.stderr)
        return 1


# What a message must not show a user: where in PyTorch's C++ sources it was raised
# ("[enforce fail at inline_container.cc:672]", "(function x at ../c10/core/y.cpp:12)"),
# and the memory address of an object ("<_io.BytesIO object at 0x7f...>").
_SOURCE = re.compile(r"\s*[\[(][^\[\]()]*\.(?:cc|cpp|cu|h|hpp):\d+[^\[\]()]*[\])]\s*\.?\s*")
_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def one_line(message: str) -> str:
    """The first non-empty line of an error message, without C++ locations or object reprs."""
    line = next((x.strip() for x in message.splitlines() if x.strip()), "")
    line = _SOURCE.sub(" ", line).strip()
    return _REPR.sub(lambda m: f"a {m.group(1).rsplit('.', 1)[-1]}", line)
