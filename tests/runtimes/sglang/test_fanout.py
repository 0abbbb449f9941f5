"""Fan-out: planning which requests share a prefix, and coalescing those that arrive
together so the prefix is prefilled once."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest
from orchestrator.runtimes.sglang.fanout import (
    FanoutGroup,
    PrefixCoalescer,
    common_prefix_length,
    plan_fanout,
)

from orchestrator import RuntimeUnavailable

P = list(range(100, 140))  # a 40-token shared prefix


def test_common_prefix_length() -> None:
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0
    assert common_prefix_length([]) == 0


def test_children_of_one_prefix_form_one_group_with_that_prefix() -> None:
    prompts = [[*P, 1, 2], [*P, 1, 3], [*P, 7]]
    assert plan_fanout(prompts, ["t"] * 3, min_prefix_tokens=32) == [
        FanoutGroup(key="t", members=(0, 1, 2), prefix_ids=tuple(P))
    ]


def test_identical_prompts_prefill_the_whole_prompt() -> None:
    [group] = plan_fanout([P, P, P, P], ["t"] * 4, min_prefix_tokens=32)
    assert group.prefix_ids == tuple(P) and group.members == (0, 1, 2, 3)


def test_groups_split_by_key_by_head_and_by_length() -> None:
    other = list(range(500, 540))
    prompts = [[*P, 1], [*other, 1], [*P, 2], [1, 2, 3], [1, 2, 3], [*P, 3]]
    keys = ["a", "a", "a", "a", "a", "b"]
    assert plan_fanout(prompts, keys, min_prefix_tokens=32) == [
        FanoutGroup(key="a", members=(0, 2), prefix_ids=tuple(P)),
        FanoutGroup(key="a", members=(1,)),
        FanoutGroup(key="a", members=(3,)),  # shorter than the threshold: alone
        FanoutGroup(key="a", members=(4,)),
        FanoutGroup(key="b", members=(5,)),  # another tree, another server
    ]


def test_plan_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="min_prefix_tokens must be at least 1, got 0"):
        plan_fanout([P], ["t"], min_prefix_tokens=0)
    with pytest.raises(ValueError, match="2 prompts but 1 affinity keys"):
        plan_fanout([P, P], ["t"], min_prefix_tokens=1)


class Prefills:
    """Records the prefills a coalescer asks for; ``fail`` makes them raise."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[int], int]] = []
        self.fail = fail

    async def __call__(self, key: str, prefix: list[int], shared_by: int) -> dict[str, Any]:
        self.calls.append((key, prefix, shared_by))
        if self.fail:
            raise RuntimeUnavailable("refused", runtime="sglang@x")
        return {"prefix_tokens": len(prefix), "shared_by": shared_by}


@pytest.mark.anyio
async def test_concurrent_arrivals_share_one_prefill_per_key() -> None:
    coalescer = PrefixCoalescer(min_prefix_tokens=32)
    prefills = Prefills()
    reports: dict[str, dict[str, Any] | None] = {}

    async def arrive(name: str, key: str, ids: list[int]) -> None:
        reports[name] = await coalescer.join(key, ids, prefills)

    async with anyio.create_task_group() as tg:
        tg.start_soon(arrive, "a1", "a", [*P, 1])
        tg.start_soon(arrive, "a2", "a", [*P, 2])
        tg.start_soon(arrive, "a3", "a", [*P, 3])
        tg.start_soon(arrive, "b1", "b", [*P, 1])
    assert prefills.calls == [("a", P, 3)]
    assert reports == {
        "a1": {"prefix_tokens": 40, "shared_by": 3},
        "a2": {"prefix_tokens": 40, "shared_by": 3},
        "a3": {"prefix_tokens": 40, "shared_by": 3},
        "b1": None,
    }
    # The window closed: a later arrival opens a new one, alone.
    assert await coalescer.join("a", [*P, 4], prefills) is None
    assert len(prefills.calls) == 1


@pytest.mark.anyio
async def test_prefix_caps_bound_the_prefill() -> None:
    coalescer = PrefixCoalescer(min_prefix_tokens=4)
    prefills = Prefills()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(coalescer.join, "k", [*P, 1], prefills, prefix_cap=10))
        tg.start_soon(partial(coalescer.join, "k", [*P, 2], prefills, prefix_cap=12))
    assert prefills.calls == [("k", P[:10], 2)]


@pytest.mark.anyio
async def test_a_failed_prefill_is_reported_and_everyone_goes_on() -> None:
    coalescer = PrefixCoalescer(min_prefix_tokens=32)
    reports: list[dict[str, Any] | None] = []

    async def arrive(ids: list[int]) -> None:
        reports.append(await coalescer.join("k", ids, Prefills(fail=True)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(arrive, [*P, 1])
        tg.start_soon(arrive, [*P, 2])
    assert (
        reports
        == [
            {
                "prefix_tokens": 40,
                "shared_by": 2,
                "error": "RuntimeUnavailable: runtime 'sglang@x': refused",
            }
        ]
        * 2
    )


@pytest.mark.anyio
async def test_a_cancelled_leader_releases_the_others() -> None:
    coalescer = PrefixCoalescer(min_prefix_tokens=32, window_s=60)
    prefills = Prefills()
    follower: list[dict[str, Any] | None] = []

    async def follow() -> None:
        follower.append(await coalescer.join("k", [*P, 2], prefills))

    async with anyio.create_task_group() as outer:
        with anyio.CancelScope() as leader_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(coalescer.join, "k", [*P, 1], prefills)
                await anyio.wait_all_tasks_blocked()
                outer.start_soon(follow)
                await anyio.wait_all_tasks_blocked()
                leader_scope.cancel()
    assert follower == [None]
    assert prefills.calls == []
