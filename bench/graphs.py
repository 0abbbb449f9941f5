"""Reasoning-graph benchmarks: one function per case, one JSON line per case.

Cases (``--case NAME``, repeatable; default: all), on the embedded runtime (SmolLM2 unless
``--model`` names another path), greedy, each on a fresh runtime so nothing is cached across
cases:

- ``tim_pruning`` (TIM, methods.md §1): the same forced three-level task (``--tim-shape``:
  top tasks × subtasks × leaves) decoded with the ``tim_pruning`` memory at ``B = 1`` and
  with pruning off. Reports the peak of tokens held in the live sequence (with and without
  the prompt), their ratio (target ≤ 0.5), and per prune the tokens re-encoded after the
  dropped list against the whole context at that moment (what re-prefilling would cost).
  Greedy text differs between the two runs (pruning changes what the model sees); the tree's
  shape is the same by construction.
- ``threadweaver`` (ThreadWeaver, methods.md §2): token latency (sequential tokens + the
  longest thread of each block) and wall-clock against sequential decoding, twice.
  ``embedded``: SmolLM2 in ``prompted`` mode with ``--tw-outlines`` threads, against one
  sequence decoding the parallel run's total number of tokens (EOS ignored; the content
  differs, the work is the same). ``scripted_tags``: a ``tags``-mode response replayed by the
  scripted runtime at ``--tw-token-seconds`` per decoded token, against the very same
  response decoded as one sequence — the mechanism's wall-clock with decode time dominating.

    python bench/graphs.py [--case tim_pruning] [--case threadweaver] [--device cuda]

GlimpRouter and ParaThinker cases come from ``bench/graphs_routing.py`` through ``CASES``;
the Hogwild! decode benchmark, which needs its own shared-history arguments, is
``bench/graphs_hogwild.py``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from orchestrator.graphs.threadweaver import PROMPTED_SYSTEM_PROMPT

from orchestrator import ChatMessage, Orchestrator, Prompt, SamplingParams, ToolSpec, hookimpl

QUESTION = "A box holds 6 rows of 7 eggs. How many eggs are in 3 boxes?"
NUMBER = {"type": "integer", "minimum": 0, "maximum": 999}


class Calculator:
    @hookimpl
    def orchestrator_add_tools(self) -> list[ToolSpec]:
        async def multiply(params: dict[str, Any]) -> Any:
            return {"product": params["a"] * params["b"]}

        parameters = {
            "type": "object",
            "properties": {"a": NUMBER, "b": NUMBER},
            "required": ["a", "b"],
            "additionalProperties": False,
        }
        return [ToolSpec(name="multiply", parameters=parameters, call=multiply)]


def three_levels(tops: int, subtasks: int, leaves: int) -> list[dict[str, Any]]:
    """``tops`` tasks, each with ``subtasks`` subtasks of ``leaves`` leaf tasks."""
    middle = {"subtasks": [{} for _ in range(leaves)]}
    return [{"subtasks": [middle for _ in range(subtasks)]} for _ in range(tops)]


def runtime(args: argparse.Namespace) -> Any:
    from orchestrator.runtimes.embedded import EmbeddedRuntime

    return EmbeddedRuntime.from_pretrained(args.model, device=args.device)


async def tim_pruning(args: argparse.Namespace) -> dict[str, Any]:
    tops, subtasks, leaves = args.tim_shape
    shape = three_levels(tops, subtasks, leaves)
    options = {
        "shape": shape,
        "max_field_chars": args.tim_field_chars,
        "temperature": 0.0,
        "max_tokens": 4096,
    }
    runs: dict[str, dict[str, Any]] = {}
    for label, buffer in (("pruned", 1), ("full", None)):
        rt = runtime(args)
        try:
            orch = Orchestrator(rt, plugins=[Calculator()])
            orch.registry.names("graph")  # load the plugins before the clock starts
            start = time.perf_counter()
            result = await orch.run(
                QUESTION, graph="tim", graph_options=options, memory_options={"buffer": buffer}
            )
            seconds = time.perf_counter() - start
            meta = result.meta["tim"]
            if not meta["complete"]:
                raise RuntimeError(f"the {label} run did not finish: {result.stop_detail}")
            runs[label] = {**meta, "wall_seconds": seconds}
        finally:
            await rt.aclose()
    pruned, full = runs["pruned"], runs["full"]
    prompt = full["prompt_tokens"]
    prunes = pruned["prunes"]
    return {
        "case": "tim_pruning",
        "model": rt.model,
        "shape": f"{tops}x{subtasks}x{leaves}",
        "buffer": 1,
        "prompt_tokens": prompt,
        "peak_kv_tokens_pruned": pruned["peak_kv_tokens"],
        "peak_kv_tokens_full": full["peak_kv_tokens"],
        "peak_ratio": round(pruned["peak_kv_tokens"] / full["peak_kv_tokens"], 3),
        "peak_response_tokens_pruned": pruned["peak_kv_tokens"] - prompt,
        "peak_response_tokens_full": full["peak_kv_tokens"] - prompt,
        "peak_response_ratio": round(
            (pruned["peak_kv_tokens"] - prompt) / (full["peak_kv_tokens"] - prompt), 3
        ),
        "prunes": len(prunes),
        "reencoded_per_prune": [p["reencoded_tokens"] for p in prunes],
        "context_per_prune": [p["live_tokens"] + p["dropped_tokens"] for p in prunes],
        "mean_reencoded_fraction": round(
            sum(p["reencoded_tokens"] / (p["live_tokens"] + p["dropped_tokens"]) for p in prunes)
            / max(1, len(prunes)),
            3,
        ),
        "generated_tokens": {
            "pruned": pruned["generated_tokens"],
            "full": full["generated_tokens"],
        },
        "wall_seconds": {
            "pruned": round(pruned["wall_seconds"], 2),
            "full": round(full["wall_seconds"], 2),
        },
    }


async def threadweaver(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "case": "threadweaver",
        "embedded": await _threadweaver_embedded(args),
        "scripted_tags": await _threadweaver_scripted(args),
    }


async def _threadweaver_embedded(args: argparse.Namespace) -> dict[str, Any]:
    """SmolLM2 in ``prompted`` mode vs one sequence decoding as many tokens."""
    options = {
        "mode": "prompted",
        "num_outlines": args.tw_outlines,
        "max_outline_tokens": 24,
        "max_thread_tokens": args.tw_thread_tokens,
        "max_response_tokens": args.tw_response_tokens,
        "temperature": 0.0,
    }
    rt = runtime(args)
    try:
        orch = Orchestrator(rt)
        orch.registry.names("graph")  # load the plugins before the clock starts
        start = time.perf_counter()
        result = await orch.run(QUESTION, graph="threadweaver", graph_options=options)
        parallel_seconds = time.perf_counter() - start
        meta = result.meta["threadweaver"]
        messages = (
            ChatMessage(role="system", content=PROMPTED_SYSTEM_PROMPT),
            ChatMessage(role="user", content=QUESTION),
        )
        start = time.perf_counter()
        handle = await rt.open_sequence(Prompt(messages=messages))
        try:
            sampling = SamplingParams(
                max_new_tokens=meta["total_tokens"], temperature=0.0, ignore_eos=True
            )
            sequential = await handle.generate(sampling)
        finally:
            await handle.release()
        sequential_seconds = time.perf_counter() - start
    finally:
        await rt.aclose()
    return _latency(rt.model, meta, len(sequential.token_ids), parallel_seconds, sequential_seconds)


async def _threadweaver_scripted(args: argparse.Namespace) -> dict[str, Any]:
    """A ThreadWeaver-format response (``tags`` mode, the tags as special tokens) replayed
    at a fixed decode time per token, against the same response as one sequence: what the
    orchestrator's fork/join achieves when decode time dominates, free of CPU contention."""
    from orchestrator.graphs.threadweaver_format import TAGS

    from orchestrator.testing import ScriptedRuntime

    n, width = args.tw_outlines, args.tw_thread_tokens
    outlines = "".join(f"<Outline> {i}: part {i}\n" for i in range(1, n + 1))
    seq1 = "Plan the parts.<Parallel>\n<Outlines>\n" + outlines + "</Outlines>"
    body = "x" * (width - 1) + "</Thread>"  # ``width`` tokens with the closing tag
    final = "</Parallel>\nSo the answer is \\boxed{126}."
    rules = [{"endswith": "assistant\n", "outputs": [seq1]}]
    rules += [{"endswith": f"\n<Thread>\n{i}:", "outputs": [body]} for i in range(1, n + 1)]
    rules += [{"endswith": "</Thread>\n", "outputs": [final]}]
    special = {tag: 10 + i for i, tag in enumerate(TAGS)}
    delay = args.tw_token_seconds
    script = {"rules": [{**r, "token_delay": delay} for r in rules]}
    rt = ScriptedRuntime(script, special_tokens=special)
    orch = Orchestrator(rt)
    orch.registry.names("graph")  # load the plugins before the clock starts
    start = time.perf_counter()
    result = await orch.run(QUESTION, graph="threadweaver")
    parallel_seconds = time.perf_counter() - start
    meta = result.meta["threadweaver"]
    # the same content, decoded as one sequence at the same time per token
    response = meta["response"]
    sequential_rt = ScriptedRuntime(
        {"default": {"outputs": [response], "token_delay": delay}}, special_tokens=special
    )
    start = time.perf_counter()
    handle = await sequential_rt.open_sequence(Prompt(text=QUESTION))
    completion = await handle.generate(SamplingParams(max_new_tokens=4096))
    await handle.release()
    sequential_seconds = time.perf_counter() - start
    line = _latency(
        "scripted", meta, len(completion.token_ids), parallel_seconds, sequential_seconds
    )
    return {**line, "seconds_per_token": delay}


def _latency(
    model: str, meta: dict[str, Any], sequential_tokens: int, parallel: float, sequential: float
) -> dict[str, Any]:
    critical = meta["critical_path_tokens"]
    return {
        "model": model,
        "blocks": meta["blocks"],
        "total_tokens": meta["total_tokens"],
        "critical_path_tokens": critical,
        "sequential_token_latency": sequential_tokens,
        "token_latency_speedup": round(sequential_tokens / critical, 3),
        "parallel_wall_seconds": round(parallel, 3),
        "sequential_wall_seconds": round(sequential, 3),
        "wall_clock_speedup": round(sequential / parallel, 3),
    }


async def _routing(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """GlimpRouter and ParaThinker cases: ``bench/graphs_routing.py`` (issue 7), at its
    defaults (run that file for its options)."""
    import graphs_routing  # bench/ is on sys.path when this file runs as a script

    return await graphs_routing.CASES[name](args)


CASES: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "tim_pruning": tim_pruning,
    "threadweaver": threadweaver,
    "glimp_router": functools.partial(_routing, "glimp_router"),
    "parathinker_join": functools.partial(_routing, "parathinker_join"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--model", default=None, help="HF directory or .gguf (default SmolLM2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tim-shape", type=int, nargs=3, default=[3, 2, 2], metavar="N")
    parser.add_argument("--tim-field-chars", type=int, default=24)
    parser.add_argument("--tw-outlines", type=int, default=4)
    parser.add_argument("--tw-thread-tokens", type=int, default=64)
    parser.add_argument("--tw-response-tokens", type=int, default=384)
    parser.add_argument("--tw-token-seconds", type=float, default=0.01)
    args = parser.parse_args()
    for name in args.case or list(CASES):
        print(json.dumps(anyio.run(CASES[name], args)), flush=True)


if __name__ == "__main__":
    main()
