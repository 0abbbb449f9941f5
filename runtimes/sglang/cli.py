"""``orchestrator sglang serve``: run an SGLang server in the foreground for the runtime.

::

    orchestrator sglang serve --model /tmp/model --port 30000 -- --attention-backend triton

starts ``python -m sglang.launch_server`` with those flags, waits for ``/health``, prints
the runtime spec to use, and serves until Ctrl-C or SIGTERM, then stops the server's whole
process group (:class:`.launcher.SGLangServer`). ``--check`` stops as soon as the server is
healthy: a quick test of a GPU set-up.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from orchestrator import CliCommand, RuntimeUnavailable

from .launcher import SGLangServer

__all__ = ["sglang_command"]


def sglang_command() -> CliCommand:
    return CliCommand(
        name="sglang",
        help="run SGLang servers for the sglang runtime",
        configure=_configure,
        run=_run,
    )


def _configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="sglang_command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="start python -m sglang.launch_server, wait for /health, serve until Ctrl-C",
        description=(
            "Start python -m sglang.launch_server with the given flags, wait for /health, "
            "print the runtime spec to use, and serve until Ctrl-C or SIGTERM; then stop "
            "the server's whole process group. --check stops as soon as it is healthy."
        ),
    )
    serve.add_argument("--model", required=True, help="model directory (--model-path)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=30000, help="0 picks a free port")
    serve.add_argument("--startup-timeout", type=float, default=600.0, metavar="SECONDS")
    serve.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter with sglang installed (default: this one)",
    )
    serve.add_argument(
        "--check", action="store_true", help="stop as soon as the server is healthy (exit 0)"
    )
    serve.add_argument(
        "server_args", nargs=argparse.REMAINDER, help="further sglang.launch_server flags, after --"
    )


def _run(args: argparse.Namespace) -> int:
    extra = list(args.server_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    server = SGLangServer(
        args.model,
        host=args.host,
        port=args.port,
        extra_args=extra,
        python=args.python,
        startup_timeout_s=args.startup_timeout,
        inherit_output=True,
    )
    with server:
        print(f"SGLang serves {args.model} at {server.url}", flush=True)
        print(f"runtime spec: sglang:{server.url}?tokenizer={args.model}", flush=True)
        if args.check:
            return 0
        return _serve_until_stopped(server)


def _serve_until_stopped(server: SGLangServer) -> int:
    """Wait for Ctrl-C or SIGTERM (both stop the server cleanly) or for the server to exit."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        assert server.process is not None
        status = server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise RuntimeUnavailable(
        f"the server exited with status {status}", runtime=f"sglang@{server.url}"
    )
