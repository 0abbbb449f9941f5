"""Hogwild! on the embedded runtime: the shared cache is real (counters), segment attention
over the workers' views equals materialising each view (the reference's re-rotated keys),
and an end-to-end run on SmolLM2."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import torch
from orchestrator.graphs.hogwild.engines import SharedCache
from orchestrator.graphs.hogwild.layout import Pieces
from orchestrator.graphs.hogwild.prompt import SELF_CHECK, seed_text, step_prefix
from orchestrator.runtimes.embedded import EmbeddedRuntime, tiny_random_model

from orchestrator import Orchestrator

NAMES = ("Alice", "Bob", "Carol")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "graphs_hogwild.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("graphs_hogwild", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_model(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture
def make_runtime(tiny_dir: Path) -> Iterator[Callable[..., EmbeddedRuntime]]:
    created: list[EmbeddedRuntime] = []

    def make(**options: Any) -> EmbeddedRuntime:
        runtime = EmbeddedRuntime.from_pretrained(
            str(tiny_dir), block_size=4, kv_cache_bytes=2**22, **options
        )
        created.append(runtime)
        return runtime

    yield make
    for runtime in created:
        anyio.run(runtime.aclose)


class ForwardLog:
    """Records the tokens of every forward the runner computes, per sequence."""

    def __init__(self, runtime: EmbeddedRuntime) -> None:
        self.forwards: list[list[int]] = []
        runner = runtime.engine.runner
        run = runner.run

        def logged(chunks: Any, positions: Any) -> Any:
            self.forwards.append([c.end - c.start for c in chunks])
            return run(chunks, positions)

        runner.run = logged  # type: ignore[method-assign]  # instance-level spy, test only


async def test_each_lockstep_step_is_one_forward_of_one_token_per_worker(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    rt = make_runtime(max_num_batched_tokens=1024)  # the prompt in one prefill chunk
    log = ForwardLog(rt)
    result = await Orchestrator({"tiny": rt}).run(
        "What is 3 + 4?",
        graph="hogwild",
        graph_options={"suggestions": False, "max_steps": 12, "finisher_max_tokens": 0},
    )
    meta = result.meta["hogwild"]
    steps = meta["inference_steps"]
    assert meta["mode"] == "shared_segments" and result.fallbacks == []
    pieces = await Pieces.build(rt, "What is 3 + 4?", NAMES[:2], suggestions=False)
    seeds = [len(await rt.tokenize(seed_text(NAMES, w))) for w in range(2)]
    # Prefill: the prompt and the two headers, once each; then the two seeds in one forward;
    # then one forward per lockstep step with exactly one new token per worker.
    assert log.forwards[:4] == [
        [len(pieces.prompt)],
        [len(pieces.others_header)],
        [len(pieces.own_header)],
        seeds,
    ]
    assert log.forwards[4:] == [[1, 1]] * (steps - 1)
    assert rt.statistics().blocks_in_use == 0  # every view and handle released


async def lockstep_logits(rt: EmbeddedRuntime, forced: list[list[int]]) -> list[torch.Tensor]:
    """Teacher-forced lockstep over the graph's shared cache (three workers): each step
    every worker reads one forced token; Alice's step moves into the history halfway.
    Returns every worker's next-token logits after every step."""
    pieces = await Pieces.build(rt, "What is 3 + 4?", NAMES, suggestions=False)
    cache = SharedCache("tiny", rt, pieces, len(NAMES))
    await cache.open()
    seen: list[torch.Tensor] = []

    async def feed(worker: int, ids: list[int]) -> None:
        view = cache.views[worker]
        assert view is not None
        await view.extend(ids)
        cache.own_len[worker] += len(ids)

    async def step(per_worker: list[list[int]]) -> None:
        async with anyio.create_task_group() as tg:
            for worker, ids in enumerate(per_worker):
                tg.start_soon(feed, worker, ids)
        for view in cache.views:
            assert view is not None and view.seq.next_logits is not None
            seen.append(view.seq.next_logits.clone())

    await step([await rt.tokenize(seed_text(NAMES, w)) for w in range(len(NAMES))])
    for index, tokens in enumerate(forced):
        if index == len(forced) // 2:  # Alice's step ends: relink, her next block opens
            await cache.move([0])
            opening = await rt.tokenize(step_prefix("Alice", 2))
            await step([opening, [tokens[1]], [tokens[2]]])
        else:
            await step([[t] for t in tokens])
    await cache.release()
    assert rt.statistics().blocks_in_use == 0
    return seen


async def test_segment_attention_equals_materialising_each_workers_view(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    forced = [[100 + 3 * i, 200 + 3 * i, 300 + 3 * i] for i in range(6)]
    segment = await lockstep_logits(make_runtime(), forced)
    reference = make_runtime()
    runner = reference.engine.runner
    runner.segment_backend = bench().RerotateBackend(
        runner.cache, runner.rope, runner.model.config.num_heads
    )
    rerotated = await lockstep_logits(reference, forced)
    assert len(segment) == len(rerotated) == 3 * 7
    for ours, theirs in zip(segment, rerotated, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-4)
        assert int(ours.argmax()) == int(theirs.argmax())


@pytest.fixture(scope="module")
def smollm2() -> Iterator[EmbeddedRuntime]:
    runtime = EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=128 * 2**20)
    yield runtime
    anyio.run(runtime.aclose)


async def test_two_workers_collaborate_on_smollm2(smollm2: EmbeddedRuntime) -> None:
    log = ForwardLog(smollm2)
    question = "Sara has 12 pencils and gives 5 to Tom. How many pencils does she have now?"
    result = await Orchestrator({"smollm2": smollm2}).run(
        question,
        graph="hogwild",
        seed=0,
        graph_options={
            "suggestions": False,
            "max_steps": 16,
            "step_boundary": "text",
            "temperature": 0.0,
        },
    )
    meta = result.meta["hogwild"]
    assert (meta["mode"], meta["workers"], result.stop_reason) == (
        "shared_segments",
        ["Alice", "Bob"],
        "done",
    )
    steps = [n for n in result.graph if n.kind == "step"]
    assert [n.attrs.name for n in result.graph if n.kind == "worker"] == ["Alice", "Bob"]
    assert steps[0].text.startswith("**Alice [1]:** Hi, I'm Alice. Here's how we can")
    assert steps[1].text.startswith("**Bob [1]:** Hi, I'm Bob.")
    assert set(meta["history"]) <= {n.id for n in steps}
    # After the seeds' forward, each lockstep step computes exactly one token per worker
    # (the one it sampled before), plus the opening of every step that started.
    openings = 0
    for node in steps:
        if node.attrs.step > 1:
            name = meta["workers"][node.attrs.worker]
            opening = step_prefix(name, node.attrs.step)
            if node.text.startswith(opening + SELF_CHECK):
                opening += SELF_CHECK
            openings += len(await smollm2.tokenize(opening))
    seeds = log.forwards.index([len(t) for t in await seeds_of(smollm2)])
    answer = result.graph[result.answer_node or ""]
    finisher = answer.usage.prompt_tokens - answer.usage.cached_tokens
    finisher += max(0, answer.usage.generated_tokens - 1)
    computed = sum(sum(f) for f in log.forwards[seeds + 1 :])
    assert computed == 2 * (meta["inference_steps"] - 1) + openings + finisher
    assert (answer.kind, answer.parent_ids) == ("answer", ("r.0", "r.1"))
    assert smollm2.statistics().blocks_in_use == 0


async def seeds_of(runtime: EmbeddedRuntime) -> list[list[int]]:
    return [await runtime.tokenize(seed_text(NAMES, w)) for w in range(2)]
