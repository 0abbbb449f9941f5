"""Hogwild! per-token decode time: the segment backend against two ways of not sharing KV.

One JSON line per case (``--workers`` × ``--history``, default 2 and 4 workers over 512 and
2,048 tokens of shared history), each with the milliseconds per lockstep step (one token per
worker) of three methods, on the embedded runtime (SmolLM2 by default):

- ``segment``: the ``hogwild`` graph's shared cache (:class:`SharedCache`: one view per
  worker over shared segments); the segment backend reads each piece with a rotated query and
  merges the pieces with log-sum-exp. Per step: W new tokens.
- ``rerotate`` (baseline ii, the reference implementation's approach,
  ``shared_cache.combine_cache_from_structure``): the same views, but every layer of every
  step materialises each worker's view by re-rotating every cached key to its position in
  that view, then attends over the concatenation (:class:`RerotateBackend`).
- ``recompute`` (baseline i): every step re-encodes each worker's whole view from scratch
  (a fresh, uncached sequence holding the view's tokens), then samples one token.

Workers decode greedily with EOS ignored, so every step does the same work. Timings are
medians over ``--steps`` steps after ``--warmup`` steps; speedups are the baselines' medians
over the segment backend's. Run: ``python bench/graphs_hogwild.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import torch
from orchestrator.graphs.hogwild.engines import SharedCache
from orchestrator.graphs.hogwild.layout import Pieces
from orchestrator.graphs.hogwild.prompt import seed_text
from orchestrator.runtimes.embedded import EmbeddedRuntime
from orchestrator.runtimes.embedded.attention import AttentionBackend, Row

from orchestrator import Prompt, SamplingParams, SegmentSpec

GREEDY_ONE = SamplingParams(max_new_tokens=1, temperature=0.0, ignore_eos=True)
NAMES = ("Alice", "Bob", "Carol", "Dave")
FILLER = (
    "Let us compute the sum of the first hundred integers step by step and check each partial "
    "result carefully before moving on to the next part of the problem. "
)


@dataclasses.dataclass(slots=True)
class _RowPlan:
    start: int
    num_tokens: int
    foreign: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (slots, cos, sin)
    own: torch.Tensor  # [L_own] slots
    mask: torch.Tensor  # [n, L_total]


class RerotateBackend(AttentionBackend):
    """Materialise each row's view: foreign keys re-rotated to their view positions (a piece
    read with query shift ``s`` has its keys rotated by ``-s``: RoPE angles add), concatenated
    with the row's own keys, one softmax. Exact like the segment backend, but it re-rotates
    and copies every cached key of every view in every layer of every step."""

    name = "rerotate"

    def supports(self, row: Row) -> bool:
        return True

    def plan(self, rows: list[Row], dtype: torch.dtype) -> list[_RowPlan]:
        device = self.cache.k.device
        plans = []
        for row in rows:
            positions = torch.arange(
                row.first_position, row.first_position + row.num_tokens, device=device
            )
            foreign, own, lengths = [], row.pieces[-1].slots, []
            for piece in row.pieces[:-1]:
                if piece.slots.numel() == 0:
                    continue
                shift = torch.tensor([-piece.query_shift], device=device)
                fc, fs = self.rope.cos_sin(shift, torch.float32)
                foreign.append((piece.slots, fc, fs))
                lengths.append(piece.slots.numel())
            own = own[: row.first_position + row.num_tokens]
            visible = torch.ones((row.num_tokens, sum(lengths)), dtype=torch.bool, device=device)
            causal = torch.arange(own.numel(), device=device)[None, :] <= positions[:, None]
            plans.append(
                _RowPlan(
                    row.start,
                    row.num_tokens,
                    foreign,
                    own,
                    torch.cat([visible, causal], 1),
                )
            )
        return plans

    def forward(self, layer: int, q: torch.Tensor, plan: object) -> torch.Tensor:
        # q: [T, num_heads, head_dim], rotated at the stored positions (the model does it)
        assert isinstance(plan, list)
        out = torch.empty_like(q)
        for row in plan:
            qr = q[row.start : row.start + row.num_tokens].float()
            keys, values = [], []
            for slots, cos, sin in row.foreign:
                k, v = self.cache.gather(layer, slots)
                keys.append(self.rope.apply(k.float(), cos, sin))  # re-rotated into the view
                values.append(v.float())
            k, v = self.cache.gather(layer, row.own)
            keys.append(k.float())
            values.append(v.float())
            k, v = torch.cat(keys).transpose(0, 1), torch.cat(values).transpose(0, 1)
            o = torch.nn.functional.scaled_dot_product_attention(
                qr.transpose(0, 1), k, v, attn_mask=row.mask, enable_gqa=True
            )
            out[row.start : row.start + row.num_tokens] = o.transpose(0, 1).to(q.dtype)
        return out


async def _history(rt: EmbeddedRuntime, num_tokens: int) -> list[int]:
    ids: list[int] = []
    chunk = await rt.tokenize(FILLER)
    while len(ids) < num_tokens:
        ids.extend(chunk)
    return ids[:num_tokens]


async def open_workers(rt: EmbeddedRuntime, history: list[int], num_workers: int) -> SharedCache:
    """The graph's shared cache over ``history`` (as the common prompt), seeds prefilled."""
    pieces = Pieces(
        prompt=tuple(history),
        others_header=tuple(await rt.tokenize("\n\n### Work in progress (others)\n\n")),
        own_header=tuple(await rt.tokenize("<...>\n\n### Work in progress (own)\n\n")),
        pivot=tuple(await rt.tokenize("<...>\n\n")),
        finisher=(),
    )
    cache = SharedCache("embedded", rt, pieces, num_workers)
    await cache.open()
    seeds = [await rt.tokenize(seed_text(NAMES, w)) for w in range(num_workers)]
    await _together([view.extend for view in cache.views], [(s,) for s in seeds])
    return cache


async def _together(calls: Sequence[Callable[..., Any]], args: Sequence[tuple[Any, ...]]) -> None:
    async with anyio.create_task_group() as tg:
        for call, arg in zip(calls, args, strict=True):
            tg.start_soon(call, *arg)


async def lockstep_times(rt: EmbeddedRuntime, cache: SharedCache, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        await _together([view.generate for view in cache.views], [(GREEDY_ONE,)] * len(cache.views))
        _sync(rt)
        times.append(time.perf_counter() - start)
    return times


async def recompute_times(rt: EmbeddedRuntime, cache: SharedCache, steps: int) -> list[float]:
    """Each step: every worker's view re-encoded as a fresh uncached sequence (a view over an
    empty segment: its own tokens are never taken from the prefix cache), one token each."""
    empty = await rt.open_sequence(Prompt(token_ids=(0,)))
    contexts = [list(view.context_token_ids) for view in cache.views]
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        scratch = [await rt.view([SegmentSpec(handle=empty, end=0)]) for _ in contexts]
        await _together([s.extend for s in scratch], [(c,) for c in contexts])
        await _together([s.generate for s in scratch], [(GREEDY_ONE,)] * len(scratch))
        _sync(rt)
        times.append(time.perf_counter() - start)
        for context, s in zip(contexts, scratch, strict=True):
            context.append(s.token_ids[-1])
            await s.release()
    await empty.release()
    return times


def _sync(rt: EmbeddedRuntime) -> None:
    if rt.engine.runner.device.type == "cuda":
        torch.cuda.synchronize()


async def run_case(
    options: dict[str, Any],
    num_workers: int,
    history_len: int,
    steps: int,
    warmup: int,
    recompute_steps: int,
) -> dict[str, Any]:
    medians: dict[str, float] = {}
    for method in ("segment", "rerotate", "recompute"):
        rt = EmbeddedRuntime.from_pretrained(options.get("model"), **options["engine"])
        runner = rt.engine.runner
        if method == "rerotate":
            runner.segment_backend = RerotateBackend(
                runner.cache, runner.rope, runner.model.config.num_heads
            )
        try:
            cache = await open_workers(rt, await _history(rt, history_len), num_workers)
            if method == "recompute":
                times = await recompute_times(rt, cache, warmup + recompute_steps)
            else:
                computed = runner.tokens_computed
                times = await lockstep_times(rt, cache, warmup + steps)
                # The first step samples from the seeds' logits; each later one computes
                # exactly one new token per worker (the one sampled before).
                assert runner.tokens_computed - computed == num_workers * (warmup + steps - 1)
            await cache.release()
        finally:
            await rt.aclose()
        medians[method] = statistics.median(times[warmup:])
    seg = medians["segment"]
    return {
        "bench": "hogwild_decode",
        "workers": num_workers,
        "history_tokens": history_len,
        "steps": steps,
        "recompute_steps": recompute_steps,
        **{f"{m}_ms_per_step": round(1000 * t, 3) for m, t in medians.items()},
        "segment_ms_per_token": round(1000 * seg / num_workers, 3),
        "speedup_vs_recompute": round(medians["recompute"] / seg, 2),
        "speedup_vs_rerotate": round(medians["rerotate"] / seg, 2),
        "device": options["engine"]["device"],
        "dtype": options["engine"]["dtype"],
        "threads": torch.get_num_threads(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--history", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--recompute-steps", type=int, default=None, help="steps timed for the slow baseline"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="fp32 on CPU, bf16 on CUDA by default")
    parser.add_argument("--model", default=None, help="HF directory or .gguf (default SmolLM2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    options = {
        "model": args.model,
        "engine": {"device": args.device, "dtype": dtype, "kv_cache_bytes": 1 << 30},
    }
    lines = []
    for num_workers in args.workers:
        for history_len in args.history:
            line = anyio.run(
                run_case,
                options,
                num_workers,
                history_len,
                args.steps,
                args.warmup,
                args.recompute_steps or args.steps,
            )
            print(json.dumps(line), flush=True)
            lines.append(line)
    return lines


if __name__ == "__main__":
    main()
