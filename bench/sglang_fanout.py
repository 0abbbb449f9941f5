"""Fan-out on SGLang: N sampled branches over one shared prompt, three ways.

(a) ``direct``: the N requests posted to ``/generate`` at once, as a client without
    prefix awareness would (a cold cache: every branch computes the prompt);
(b) ``runtime``: the same requests through :class:`SGLangRuntime` (prefix prefilled once,
    then the branches together: ``cached_tokens`` should reach N * (P - 1));
(c) ``embedded``: the embedded runtime on this machine's GPU, same requests.

Workload (issue 8): SmolLM2 bf16 on the server, a 256-token shared prompt, sampled at
temperature 0.8, EOS ignored; cases 16 x 64 and 128 x 256 (branches x new tokens). The cache
is flushed before every measured run; each case is warmed up once first. One JSON line per
case and mode: tok/s (generated tokens / wall-clock), wall-clock, cached and prompt tokens.

    python bench/sglang_fanout.py --url http://127.0.0.1:30000 [--cases 16x64,128x256]
        [--repeats 3] [--modes direct,runtime,embedded] [--tokenizer PATH]

The URL defaults to ``$ORCHESTRATOR_SGLANG_URL``. Without a reachable server the script
says so and exits with status 2. Reference (H100, SGLang 0.5.17, triton attention, decode
CUDA graph): 3,213-3,442 tok/s at 16 x 64 and 24,648-29,478 tok/s at 128 x 256, direct.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import anyio
from orchestrator.runtimes.sglang import RetryPolicy, SGLangClient, SGLangConfig, SGLangRuntime
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import GenerateRequest, PluginManager, SamplingParams

PROMPT_TEXT = "You are a careful assistant. Solve the problem step by step. "


def parse_cases(text: str) -> list[tuple[int, int]]:
    cases = []
    for item in text.split(","):
        branches, _, tokens = item.partition("x")
        cases.append((int(branches), int(tokens)))
    return cases


def requests_for(prompt: list[int], branches: int, new_tokens: int) -> list[GenerateRequest]:
    return [
        GenerateRequest(
            prompt=prompt,
            request_id=f"bench/{i}",
            sampling=SamplingParams(
                max_new_tokens=new_tokens, temperature=0.8, ignore_eos=True, seed=i
            ),
        )
        for i in range(branches)
    ]


async def run_direct(url: str, prompt: list[int], branches: int, new_tokens: int) -> dict[str, Any]:
    body = {
        "input_ids": prompt,
        "sampling_params": {"max_new_tokens": new_tokens, "temperature": 0.8, "ignore_eos": True},
    }
    outputs: list[dict[str, Any]] = []
    async with SGLangClient(url) as client:
        await client.flush_cache()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(branches):
                tg.start_soon(_post, client, body, outputs)
        wall = time.perf_counter() - start
    metas = [o["meta_info"] for o in outputs]
    return _measure(
        wall,
        [m["completion_tokens"] for m in metas],
        sum(m["cached_tokens"] for m in metas),
        sum(m["prompt_tokens"] for m in metas),
    )


async def _post(client: SGLangClient, body: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(await client.generate(body))


async def run_runtime(
    runtime: SGLangRuntime, prompt: list[int], branches: int, new_tokens: int
) -> dict[str, Any]:
    await flush(runtime)
    before = runtime.statistics()
    start = time.perf_counter()
    results = await runtime.generate(requests_for(prompt, branches, new_tokens))
    wall = time.perf_counter() - start
    after = runtime.statistics()
    measured = _measure(
        wall,
        [r.usage.generated_tokens for r in results],
        after.cached_tokens - before.cached_tokens,
        after.prompt_tokens - before.prompt_tokens,
    )
    measured["children_cached_tokens"] = sum(r.usage.cached_tokens for r in results)
    measured["prefills"] = after.prefills - before.prefills
    return measured


async def flush(runtime: SGLangRuntime) -> None:
    for backend in runtime.pool.backends:
        if isinstance(backend, SGLangClient):
            await backend.flush_cache()


async def run_embedded(
    embedded: Any, prompt: list[int], branches: int, new_tokens: int
) -> dict[str, Any]:
    start = time.perf_counter()
    results = await embedded.generate(requests_for(prompt, branches, new_tokens))
    wall = time.perf_counter() - start
    return _measure(
        wall,
        [r.usage.generated_tokens for r in results],
        sum(r.usage.cached_tokens for r in results),
        sum(r.usage.prompt_tokens for r in results),
    )


def _measure(wall: float, generated: list[int], cached: int, prompt: int) -> dict[str, Any]:
    return {
        "wall_s": round(wall, 4),
        "generated_tokens": sum(generated),
        "tok_per_s": round(sum(generated) / wall, 1),
        "cached_tokens": cached,
        "prompt_tokens": prompt,
    }


def embedded_runtime() -> tuple[Any, str | None]:
    """The embedded runtime on CUDA (bf16), or None and why not."""
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA device: the embedded comparison needs the GPU"
    manager = PluginManager()
    manager.load_entrypoints()
    if "embedded" not in manager.registry.names("runtime"):
        return None, "the embedded runtime is not installed"
    spec = manager.registry.get("runtime", "embedded")
    return spec.factory("smollm2", {"device": "cuda", "dtype": "bf16"}), None


async def server_version(url: str) -> str | None:
    """The server's SGLang version, or None if it does not answer /health within 5 s."""
    async with SGLangClient(url, retry=RetryPolicy(max_attempts=1)) as client:
        with anyio.move_on_after(5):
            if await client.health():
                return str((await client.server_info()).get("version"))
    return None


async def main(args: argparse.Namespace) -> int:
    if not args.url:
        print(
            "no SGLang server: pass --url or set ORCHESTRATOR_SGLANG_URL "
            "(start one with: orchestrator sglang serve --model PATH)",
            file=sys.stderr,
        )
        return 2
    version = await server_version(args.url)
    if version is None:
        print(f"no SGLang server answering /health at {args.url}", file=sys.stderr)
        return 2
    tokenizer = ChatTokenizer.load(args.tokenizer)
    prompt = tokenizer.encode_text(PROMPT_TEXT * 64)[: args.prompt_tokens]
    modes = args.modes.split(",")
    runtime = SGLangRuntime.connect([args.url], tokenizer, SGLangConfig())
    embedded, why_not = embedded_runtime() if "embedded" in modes else (None, None)
    try:
        for branches, new_tokens in parse_cases(args.cases):
            case = {
                "case": f"{branches}x{new_tokens}",
                "branches": branches,
                "new_tokens": new_tokens,
                "prompt_tokens_each": len(prompt),
                "sglang_version": version,
            }
            direct_tps = None
            for mode in modes:
                if mode == "embedded" and embedded is None:
                    print(json.dumps({**case, "mode": mode, "skipped": why_not}), flush=True)
                    continue
                runs = []
                for attempt in range(args.repeats + 1):  # the first run warms up
                    if mode == "direct":
                        run = await run_direct(args.url, prompt, branches, new_tokens)
                    elif mode == "runtime":
                        run = await run_runtime(runtime, prompt, branches, new_tokens)
                    else:
                        run = await run_embedded(embedded, prompt, branches, new_tokens)
                    if attempt:
                        runs.append(run)
                best = max(runs, key=lambda r: r["tok_per_s"])
                line = {
                    **case,
                    "mode": mode,
                    **best,
                    "tok_per_s_median": statistics.median(r["tok_per_s"] for r in runs),
                    "repeats": len(runs),
                }
                if mode == "direct":
                    direct_tps = best["tok_per_s"]
                if mode == "runtime":
                    line["cache_target"] = branches * (len(prompt) - 1)
                    line["cache_target_met"] = (
                        best["children_cached_tokens"] >= line["cache_target"]
                    )
                if mode != "direct" and direct_tps:
                    line["vs_direct"] = round(best["tok_per_s"] / direct_tps, 3)
                print(json.dumps(line), flush=True)
    finally:
        await runtime.aclose()
        if embedded is not None:
            await embedded.aclose()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("ORCHESTRATOR_SGLANG_URL", ""))
    parser.add_argument("--cases", default="16x64,128x256")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="direct,runtime,embedded")
    parser.add_argument("--tokenizer", default=None, help="default: SmolLM2's GGUF")
    sys.exit(anyio.run(main, parser.parse_args()))
