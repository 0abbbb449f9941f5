"""The ``orchestrator`` command line.

``orchestrator run "QUESTION" [options]``, ``orchestrator graphs list``, ``orchestrator plugins
list``, plus the subcommands plugins add through ``orchestrator_add_cli_commands``. Errors print
one line naming the problem and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._config import RunConfig
from ._exceptions import ConfigError, OrchestratorError
from ._executor import Orchestrator, RunResult
from ._plugins import PluginManager
from ._progress import ProgressDisplay
from ._render import render_tree
from ._trace_file import jsonl_tracer_provider

__all__ = ["main"]


def _pre_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE")
    parser.add_argument("--no-plugin", action="append", default=[], metavar="NAME")
    parser.add_argument("--debug", action="store_true")
    return parser


def _build_parser(pm: PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Run LLM reasoning as trees.",
        parents=[_pre_parser()],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="answer a question with a reasoning graph")
    run.add_argument("question")
    run.add_argument("--graph", default="search")
    run.add_argument("--strategy")
    run.add_argument("--scorer")
    run.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="e.g. main=embedded:smollm2 or big=sglang:http://host:30000 (repeatable)",
    )
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings")
    run.add_argument("--seed", type=int)
    run.add_argument("--budget-tokens", type=int)
    run.add_argument("--reference", help="reference answer for scorers")
    run.add_argument("--trace", metavar="FILE", help="write spans as JSON lines")
    run.add_argument("--json", action="store_true", help="print the result as JSON")

    for noun in ("graphs", "plugins"):
        sub = commands.add_parser(noun, help=f"inspect registered {noun}")
        verbs = sub.add_subparsers(dest="verb", required=True)
        listing = verbs.add_parser("list", help=f"list {noun}")
        listing.add_argument("--json", action="store_true")

    for command in pm.registry.items["cli_command"].values():
        sub = commands.add_parser(command.name, help=command.help)
        command.configure(sub)
        sub.set_defaults(plugin_command=command)
    return parser


def _parse_pairs(pairs: Sequence[str], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {pair!r}", field=option)
        result[key] = value
    return result


def _run_config(args: argparse.Namespace) -> RunConfig:
    fields: dict[str, Any] = {"graph": args.graph}
    for name in ("strategy", "scorer", "seed", "reference"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.budget_tokens is not None:
        fields["budget"] = {"max_generated_tokens": args.budget_tokens}
    config = RunConfig.build(**fields)
    return config.with_settings(_parse_pairs(args.settings, "--set"))


def _command_run(args: argparse.Namespace, pre: argparse.Namespace) -> int:
    runtimes = _parse_pairs(args.runtime, "--runtime") or None
    provider = jsonl_tracer_provider(args.trace) if args.trace else None
    config = _run_config(args)
    progress = ProgressDisplay(enabled=not args.json and sys.stderr.isatty())
    orch = Orchestrator(
        runtimes, plugins=[*pre.plugin, progress], blocked=pre.no_plugin, tracer_provider=provider
    )

    async def go() -> RunResult:
        async with orch:
            with progress:
                return await orch.run(args.question, config)

    try:
        result = anyio.run(go)
    finally:
        if provider is not None:
            provider.shutdown()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_result(result)
    return 0 if result.stop_reason != "error" else 1


def _print_result(result: RunResult) -> None:
    from rich.console import Console

    console = Console()
    console.print(render_tree(result.graph))
    usage = result.usage
    console.print(f"[bold]answer:[/bold] {result.answer}")
    detail = f" ({result.stop_detail})" if result.stop_detail else ""
    console.print(f"stopped: {result.stop_reason}{detail}")
    console.print(
        f"nodes: {usage.nodes}  generated tokens: {usage.generated_tokens}  "
        f"prompt tokens: {usage.prompt_tokens} (cached {usage.cached_tokens})  "
        f"runtime calls: {usage.runtime_calls}  scorer calls: {usage.scorer_calls}  "
        f"wall: {usage.wall_seconds:.2f}s"
    )
    for fallback in result.fallbacks:
        console.print(f"fallback: {fallback}")


def _command_list(args: argparse.Namespace, pm: PluginManager) -> int:
    if args.command == "plugins":
        infos = [info.model_dump() for info in pm.plugin_infos()]
        if args.json:
            print(json.dumps(infos, indent=2))
            return 0
        for info in infos:
            version = f" {info['version']}" if info["version"] else ""
            registers = "; ".join(f"{c}: {', '.join(n)}" for c, n in info["registers"].items())
            error = f"  ERROR: {info['error']}" if info["error"] else ""
            print(f"{info['name']}{version} [{info['source']}] {registers}{error}")
        return 0
    graphs = [
        {
            "name": name,
            "description": spec.description,
            "plugin": pm.registry.owners[("graph", name)],
        }
        for name, spec in sorted(pm.registry.items["graph"].items())
    ]
    if args.json:
        print(json.dumps(graphs, indent=2))
    else:
        for graph in graphs:
            print(f"{graph['name']:<14} {graph['description']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = _pre_parser().parse_known_args(argv)
    try:
        pm = PluginManager()
        for name in pre.no_plugin:
            pm.set_blocked(name)
        for module in pre.plugin:
            pm.import_plugin(module)
        pm.load_entrypoints(blocked=pre.no_plugin)
        for name, error in pm.failures.items():
            print(f'warning: plugin "{name}" failed to load: {error}', file=sys.stderr)
        args = _build_parser(pm).parse_args(argv)
        if args.command == "run":
            return _command_run(args, pre)
        if args.command in ("graphs", "plugins"):
            return _command_list(args, pm)
        status: int = args.plugin_command.run(args)
        return status
    except (OrchestratorError, OSError) as exc:
        if pre.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
