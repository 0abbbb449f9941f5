"""Sequence handles and views (issue #3 §5): each operation is checked against recomputing
the same context from scratch in a fresh runtime (greedy tokens identical, logits within
1e-4) and against the runner's counters (tokens computed, blocks copied)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
import torch
from orchestrator.runtimes.embedded import EmbeddedRuntime, EmbeddedSequenceHandle

from orchestrator import RequestRejected, RuntimeFailure, SamplingParams, SegmentSpec

pytestmark = pytest.mark.anyio

GREEDY = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
TEXT = "In the beginning the universe was created. This has made a lot of people very angry"


class Counters:
    def __init__(self, runtime: EmbeddedRuntime) -> None:
        self.runner = runtime.engine.runner
        self.start = (self.runner.tokens_computed, self.runner.blocks_copied)

    @property
    def computed(self) -> int:
        return self.runner.tokens_computed - self.start[0]

    @property
    def copied(self) -> int:
        return self.runner.blocks_copied - self.start[1]


@pytest.fixture
def scratch(make_runtime: Callable[..., EmbeddedRuntime]) -> Callable[..., object]:
    """Open ``ids`` in a fresh runtime (no shared cache) and return (logits, greedy tokens)."""
    fresh = make_runtime()

    async def run(ids: list[int]) -> tuple[torch.Tensor, list[int]]:
        handle = await fresh.open_sequence(ids)
        assert handle.seq.next_logits is not None
        logits = handle.seq.next_logits.clone()
        tokens = (await handle.generate(GREEDY)).token_ids
        await handle.release()
        return logits, tokens

    return run


async def assert_equivalent(
    handle: EmbeddedSequenceHandle, context: list[int], scratch: Callable[..., object]
) -> None:
    assert handle.context_token_ids == context
    reference_logits, reference_tokens = await scratch(context)  # type: ignore[misc]
    assert handle.seq.next_logits is not None
    assert torch.allclose(handle.seq.next_logits, reference_logits, atol=1e-4)
    assert (await handle.generate(GREEDY)).token_ids == reference_tokens


@pytest.mark.parametrize(("length", "copies"), [(30, 1), (32, 0)])
async def test_fork_copies_at_most_the_partial_last_block(
    runtime: EmbeddedRuntime, scratch: Callable[..., object], length: int, copies: int
) -> None:
    ids = (await runtime.tokenize(TEXT * 3))[:length]
    parent = await runtime.open_sequence(ids)
    in_use = runtime.statistics().blocks_in_use
    counters = Counters(runtime)
    children = await parent.fork(3)
    assert (counters.computed, counters.copied) == (0, 3 * copies)
    assert runtime.statistics().blocks_in_use == in_use + 3 * copies
    for child in children:
        await assert_equivalent(child, ids, scratch)
    for handle in (parent, *children):
        await handle.release()
    assert runtime.statistics().blocks_in_use == 0


async def test_extend_mid_generation_matches_recomputing(
    runtime: EmbeddedRuntime, scratch: Callable[..., object]
) -> None:
    ids = await runtime.tokenize(TEXT)
    handle = await runtime.open_sequence(ids)
    generated = (
        await handle.generate(SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True))
    ).token_ids
    tool_result = await runtime.tokenize(' {"result": 42}')
    counters = Counters(runtime)
    await handle.extend(tool_result)
    # The last generated token was never computed (nothing needed its logits yet).
    assert counters.computed == 1 + len(tool_result)
    assert handle.token_ids == ids + generated + tool_result
    await assert_equivalent(handle, ids + generated + tool_result, scratch)
    await handle.release()
    assert runtime.statistics().blocks_in_use == 0


async def test_extending_by_nothing_is_a_no_op(runtime: EmbeddedRuntime) -> None:
    """Regression: an empty extend used to queue work no step could do, failing the handle."""
    ids = await runtime.tokenize(TEXT)
    handle = await runtime.open_sequence(ids)
    counters = Counters(runtime)
    await handle.extend([])
    assert counters.computed == 0
    assert handle.token_ids == ids
    greedy = SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True)
    assert len((await handle.generate(greedy)).token_ids) == 3
    await handle.release()
    assert runtime.statistics().blocks_in_use == 0


async def test_drop_range_reencodes_only_the_tail(
    runtime: EmbeddedRuntime, scratch: Callable[..., object]
) -> None:
    ids = (await runtime.tokenize(TEXT * 2))[:30]
    handle = await runtime.open_sequence(ids)
    counters = Counters(runtime)
    await handle.drop_range(5, 12)
    # Block [4, 8) is shared with the prefix index: the kept token 4 is copied out of it.
    assert (counters.computed, counters.copied) == (30 - 12, 1)
    assert handle.token_ids == ids[:5] + ids[12:]
    await assert_equivalent(handle, ids[:5] + ids[12:], scratch)
    await handle.release()
    assert runtime.statistics().blocks_in_use == 0


async def test_dropping_the_end_recomputes_one_token(
    runtime: EmbeddedRuntime, scratch: Callable[..., object]
) -> None:
    ids = (await runtime.tokenize(TEXT * 2))[:30]
    handle = await runtime.open_sequence(ids)
    counters = Counters(runtime)
    await handle.drop_range(22, 30)
    # Token 21 is recomputed for its logits; token 20 is copied out of shared block [20, 24).
    assert (counters.computed, counters.copied) == (1, 1)
    await assert_equivalent(handle, ids[:22], scratch)
    with pytest.raises(
        RequestRejected, match=r"drop range \[3, 40\) is outside the sequence of 34 tokens"
    ):
        await handle.drop_range(3, 40)
    await handle.release()
    with pytest.raises(RequestRejected, match="the sequence handle was released"):
        await handle.extend([5])
    await handle.release()  # idempotent
    assert runtime.statistics().blocks_in_use == 0


async def test_a_view_reads_shared_segments_without_copying(
    runtime: EmbeddedRuntime, scratch: Callable[..., object]
) -> None:
    prompt = await runtime.tokenize(TEXT)
    branch_text = await runtime.tokenize(
        " Many races believe that it was created by some sort of god"
    )
    own = await runtime.tokenize(" Then")
    trunk = await runtime.open_sequence(prompt)
    [branch] = await trunk.fork(1)
    await branch.extend(branch_text)
    counters = Counters(runtime)
    in_use = runtime.statistics().blocks_in_use
    view = await runtime.view(
        [
            SegmentSpec(handle=trunk, start=0, end=len(prompt)),
            SegmentSpec(handle=branch, start=len(prompt), end=len(prompt) + len(branch_text)),
        ]
    )
    await view.extend(own)
    assert (counters.computed, counters.copied) == (len(own), 0)
    assert runtime.statistics().blocks_in_use == in_use + 1  # the view's own tokens only
    await assert_equivalent(view, prompt + branch_text + own, scratch)
    for handle in (trunk, branch, view):
        await handle.release()
    assert runtime.statistics().blocks_in_use == 0


async def test_a_view_reads_a_segment_as_it_grows(
    runtime: EmbeddedRuntime, scratch: Callable[..., object]
) -> None:
    prompt = await runtime.tokenize(TEXT)
    source = await runtime.open_sequence(prompt)
    view = await runtime.view([SegmentSpec(handle=source)])  # end=None: up to its current end
    more = (await source.generate(GREEDY)).token_ids
    await source.extend([13])  # computes the last generated token too
    own = await runtime.tokenize(" Indeed")
    await view.extend(own)
    await assert_equivalent(view, [*prompt, *more, 13, *own], scratch)
    with pytest.raises(
        RequestRejected, match="cannot drop a range from a sequence that views are reading"
    ):
        await source.drop_range(0, 2)
    await source.release()
    assert runtime.statistics().blocks_in_use > 0  # the view still reads the source's KV
    await view.release()
    assert runtime.statistics().blocks_in_use == 0


async def hogwild(runtime: EmbeddedRuntime) -> list[list[int]]:
    """Two workers decoding in lockstep, each reading the other's growing step."""
    common = await runtime.open_sequence(await runtime.tokenize(TEXT))
    workers: list[EmbeddedSequenceHandle] = []
    for name in ("Alice", "Bob"):
        worker = await runtime.view([SegmentSpec(handle=common)])
        await worker.extend(await runtime.tokenize(f" **{name}:**"))
        workers.append(worker)
    alice, bob = workers
    alice_view = await runtime.view([SegmentSpec(handle=common), SegmentSpec(handle=bob)])
    bob_view = await runtime.view([SegmentSpec(handle=common), SegmentSpec(handle=alice)])
    outputs: dict[int, list[int]] = {}

    async def work(index: int, own: EmbeddedSequenceHandle) -> None:
        outputs[index] = (
            await own.generate(SamplingParams(max_new_tokens=6, temperature=0.8, seed=index))
        ).token_ids

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, 0, alice)
        tg.start_soon(work, 1, bob)
    assert len(alice_view.context_token_ids) == len(common.token_ids) + len(bob.token_ids)
    for handle in (common, alice, bob, alice_view, bob_view):
        await handle.release()
    assert runtime.statistics().blocks_in_use == 0
    return [outputs[0], outputs[1]]


async def test_lockstep_workers_sharing_segments(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    first, second = await hogwild(make_runtime()), await hogwild(make_runtime())
    assert first == second and all(len(tokens) == 6 for tokens in first)


async def test_handle_misuse_is_rejected(runtime: EmbeddedRuntime) -> None:
    handle = await runtime.open_sequence("Hello")
    with pytest.raises(
        RequestRejected, match="a sequence handle generates one sample at a time, got n=2"
    ):
        await handle.generate(SamplingParams(n=2))
    view = await runtime.view([SegmentSpec(handle=handle)])
    with pytest.raises(
        RequestRejected, match="the sequence has no token of its own yet: extend it"
    ):
        await view.generate(GREEDY)
    with pytest.raises(RequestRejected, match=r"segment 0: range \[0, 9\) is outside its 1 tokens"):
        await runtime.view([SegmentSpec(handle=handle, end=9)])
    with pytest.raises(RequestRejected, match="a view needs at least one segment"):
        await runtime.view([])
    await view.release()
    await handle.release()
    with pytest.raises(RequestRejected, match="segment 0: the handle was released"):
        await runtime.view([SegmentSpec(handle=handle)])
    assert runtime.statistics().blocks_in_use == 0


async def test_a_cancelled_handle_generation_keeps_the_handle_usable(
    runtime: EmbeddedRuntime,
) -> None:
    handle = await runtime.open_sequence(TEXT)
    start = len(handle.token_ids)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.generate, SamplingParams(max_new_tokens=500, ignore_eos=True))
            while len(handle.token_ids) < start + 3:
                await runtime.engine.advance()  # wait for steps, not for time
            scope.cancel()
    grown = len(handle.token_ids)
    assert grown >= start + 3 and handle.seq.gen is None
    completion = await handle.generate(SamplingParams(max_new_tokens=2, ignore_eos=True))
    assert len(handle.token_ids) == grown + 2 == start + (grown - start) + len(completion.token_ids)
    await handle.release()
    assert runtime.statistics().blocks_in_use == 0


async def test_handles_that_exhaust_the_budget_get_an_error_not_a_hang(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    runtime = make_runtime(kv_cache_bytes=16 * 2048)  # 16 blocks of 4 tokens
    big = await runtime.open_sequence(list(range(1000, 1040)))  # 10 blocks
    small = await runtime.open_sequence(list(range(2000, 2020)))  # 5 blocks
    with pytest.raises(
        RuntimeFailure, match="KV cache budget of 16 blocks is exhausted by sequence handles"
    ):
        await small.extend(list(range(3000, 3010)))
    await big.release()
    await small.extend([3010, 3011])  # the handle works again once blocks are free
    assert len(small.token_ids) == 20 + 10 + 2
    await small.release()
    assert runtime.statistics().blocks_in_use == 0
