"""`visionzoo explore`: serve the architecture explorer, or export it as a static site."""

from __future__ import annotations

import argparse
from pathlib import Path

from visionzoo.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explore",
        help="open the architecture explorer in a browser (local web server)",
        description=(
            "Serve the explorer: charts of every model, model cards with diagrams and "
            "source, comparisons, and a look inside your trained runs."
        ),
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder of training runs")
    p.add_argument(
        "--results", type=Path, default=Path("results"), help="folder with bench/ and lab/ results"
    )
    p.add_argument(
        "--export", type=Path, metavar="DIR", help="write a static site to DIR instead of serving"
    )
    p.add_argument(
        "--models", nargs="+", metavar="PATTERN", help="with --export: only these models (fnmatch)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from visionzoo.explorer.data import Explorer
        from visionzoo.explorer.server import create_app, serve
    except ImportError as err:
        raise UserError(
            f"the explorer needs its extras ({err.name} is missing): "
            "pip install 'visionzoo[explorer]'"
        ) from None
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port")
    explorer = Explorer(args.runs, args.results)
    if args.export:
        from visionzoo.explorer.export import export_site
        from visionzoo.registry import list_models

        models = list_models(args.models) if args.models else None
        if models == []:
            raise UserError(f"no model matches {' '.join(args.models)}")
        export_site(args.export, explorer, models)
        print(f"open {args.export.resolve() / 'index.html'} (or serve the folder over HTTP)")
        return 0
    _check_port(args.host, args.port)
    app = create_app(explorer=explorer, host=args.host)
    print(f"visionzoo explorer: http://{args.host}:{args.port}  (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: listening beyond this machine; anyone who can reach it can use it")
    serve(app, args.host, args.port)
    return 0


def _check_port(host: str, port: int) -> None:
    """Say in one line when the address is taken, before uvicorn starts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UserError(f"--host {host}: {err.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            raise UserError(
                f"cannot listen on {host}:{port} ({err.strerror}); choose another --port"
            ) from None
