"""Embedded runtime throughput vs HF transformers on a shared-prefix fan-out (issue #3).

Workload: 16 requests arriving together that share a 256-token prefix and differ in an
8-token suffix, each generating 64 sampled, seeded tokens with EOS ignored (temperature 0.8,
top-p 0.95). Compared against (a) transformers ``generate`` once per request, as peers do,
and (b) transformers ``generate`` with all 16 in one batch (equal lengths: no padding
needed). Tokens/s counts generated tokens over wall time, prefill included; each system
gets one untimed warm-up. Process CPU seconds and the load average are printed too: on a
machine shared with other jobs, wall-clock figures mean little on their own.
``prefill_tokens_computed`` is the embedded model runner's
``tokens_computed`` minus the generated tokens it fed back (each request feeds back 63 of
its 64); ``unique_prompt_tokens`` is 256 + 16 × 8. Prints one JSON line.

    python bench/runtime_throughput.py [--device cuda] [--skip-hf] [--threads N]

On a CPU shared with other jobs, a parallel op waits a scheduler time slice whenever one of
its threads is descheduled; code made of many small parallel ops (HF's) suffers far more
than ours, so compare at ``--threads 1`` there as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import anyio
import torch
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import GenerateRequest, SamplingParams

TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening, counting the steps, "
    "checking the lamp, writing the weather into a leather book that smelled of salt. "
)


def prompts(runtime: EmbeddedRuntime, args: argparse.Namespace) -> list[list[int]]:
    ids = anyio.run(runtime.tokenize, TEXT * 40)
    prefix = ids[: args.prefix]
    suffix_pool = anyio.run(runtime.tokenize, " ".join(f"Case {i}: report" for i in range(200)))
    return [
        prefix + suffix_pool[i * args.suffix : (i + 1) * args.suffix] for i in range(args.requests)
    ]


def sampling(args: argparse.Namespace, seed: int) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=args.new_tokens, temperature=0.8, top_p=0.95, seed=seed, ignore_eos=True
    )


def run_embedded(
    runtime: EmbeddedRuntime, ids: list[list[int]], args: argparse.Namespace
) -> dict[str, Any]:
    warm = [
        GenerateRequest(
            prompt=[5, 6, 7, 8] * 4,
            sampling=sampling(args, 0).model_copy(update={"max_new_tokens": 4}),
        )
    ]
    anyio.run(runtime.generate, warm)
    requests = [GenerateRequest(prompt=p, sampling=sampling(args, i)) for i, p in enumerate(ids)]
    runner = runtime.engine.runner
    computed = runner.tokens_computed
    start, cpu = time.perf_counter(), time.process_time()
    results = anyio.run(runtime.generate, requests)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    generated = sum(r.usage.generated_tokens for r in results)
    fed_back = sum(r.usage.generated_tokens - 1 for r in results)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tok_s": generated / seconds,
        "prefill_tokens_computed": runner.tokens_computed - computed - fed_back,
        "cached_tokens": sum(r.usage.cached_tokens for r in results),
    }


def hf_generate(
    model: Any, batch: torch.Tensor, args: argparse.Namespace, seed: int
) -> torch.Tensor:
    torch.manual_seed(seed)
    return model.generate(
        batch,
        attention_mask=torch.ones_like(batch),
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        top_k=0,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        pad_token_id=0,
    )


def run_hf(
    runtime: EmbeddedRuntime, ids: list[list[int]], args: argparse.Namespace
) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = (
        AutoModelForCausalLM.from_pretrained(str(runtime.model_directory), dtype=dtype)
        .to(args.device)
        .eval()
    )
    tensors = [torch.tensor([p], device=args.device) for p in ids]
    with torch.no_grad():
        hf_generate(model, tensors[0][:, :16], args, 0)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        for i, batch in enumerate(tensors):
            hf_generate(model, batch, args, i)
        sequential, sequential_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        out = hf_generate(model, torch.cat(tensors), args, 0)
        batched, batched_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape[1] == len(ids[0]) + args.new_tokens
    total = args.requests * args.new_tokens
    return {
        "sequential_tok_s": total / sequential,
        "batched_tok_s": total / batched,
        "sequential_cpu_s": sequential_cpu,
        "batched_cpu_s": batched_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prefix", type=int, default=256)
    parser.add_argument("--suffix", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip-hf", action="store_true", help="only measure the embedded runtime")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    runtime = EmbeddedRuntime.from_pretrained(None, device=args.device)
    ids = prompts(runtime, args)
    ours = run_embedded(runtime, ids, args)
    line: dict[str, Any] = {
        "benchmark": "runtime_throughput",
        "device": args.device
        if args.device != "cpu"
        else f"cpu ({torch.get_num_threads()} threads)",
        "machine": platform.machine(),
        "model": runtime.model,
        "requests": args.requests,
        "prefix_tokens": args.prefix,
        "suffix_tokens": args.suffix,
        "new_tokens": args.new_tokens,
        "embedded_tok_s": round(ours["tok_s"], 1),
        "embedded_seconds": round(ours["seconds"], 2),
        "embedded_cpu_seconds": round(ours["cpu_seconds"], 2),
        "prefill_tokens_computed": ours["prefill_tokens_computed"],
        "unique_prompt_tokens": args.prefix + args.requests * args.suffix,
        "cached_tokens": ours["cached_tokens"],
    }
    if not args.skip_hf:
        hf = run_hf(runtime, ids, args)
        line |= {
            "hf_sequential_tok_s": round(hf["sequential_tok_s"], 1),
            "hf_batched_tok_s": round(hf["batched_tok_s"], 1),
            "speedup_vs_sequential_hf": round(ours["tok_s"] / hf["sequential_tok_s"], 2),
            "speedup_vs_batched_hf": round(ours["tok_s"] / hf["batched_tok_s"], 2),
            # Process CPU time: a second view when other jobs share the cores.
            "hf_sequential_cpu_seconds": round(hf["sequential_cpu_s"], 2),
            "hf_batched_cpu_seconds": round(hf["batched_cpu_s"], 2),
        }
    line["load_average_1min"] = os.getloadavg()[0]
    anyio.run(runtime.aclose)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
