"""Fan-out planning: which requests share a prefix worth prefilling first."""

from __future__ import annotations

import pytest
from orchestrator.runtimes.sglang.fanout import FanoutGroup, common_prefix_length, plan_fanout

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
