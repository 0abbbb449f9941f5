"""Prefix-aware fan-out: which requests of a batch share a prefix worth prefilling first.

RadixAttention reuses a prefix only once it is in the cache. Children sent together while
their common prefix is not cached yet each recompute it (SGLang's default ``fcfs`` policy
admits them in one prefill batch). So when a node forks N children over a P-token prefix,
the runtime first sends the prefix alone with ``max_new_tokens=0`` (recorded: ``prefill_only``),
waits for it, then sends the children together; each child then reports the prefix as
cached, ``cached_tokens >= N * (P - 1)`` in all (SGLang always recomputes a prompt's last
token; recorded: ``fanout_child_cached``). One request with ``n > 1`` needs none of this:
SGLang itself prefills its prompt once, then forks it (``tokenizer_manager``: "Cache the
common prefix for parallel sampling").

Below ``min_prefix_tokens`` the extra round trip costs more than recomputing the prefix, so
short prefixes are not prefilled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FanoutGroup", "common_prefix_length", "plan_fanout"]


@dataclass(frozen=True)
class FanoutGroup:
    """Requests (``members``, indices into the batch) sent to one server together.

    ``prefix_ids`` is the shared prefix to prefill first, or empty when there is none worth it.
    """

    key: str
    members: tuple[int, ...]
    prefix_ids: tuple[int, ...] = ()


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every sequence starts with."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for position in range(shortest):
        token = first[position]
        if any(s[position] != token for s in sequences):
            return position
    return shortest


def plan_fanout(
    prompts: Sequence[Sequence[int]], keys: Sequence[str], *, min_prefix_tokens: int
) -> list[FanoutGroup]:
    """Group a batch by affinity key and by its first ``min_prefix_tokens`` tokens.

    Members of a group of two or more share at least ``min_prefix_tokens`` tokens, so their
    whole common prefix is prefilled first. Groups come in the order of their first member.

    :param keys: each request's affinity key: requests of one tree go to one server, so
        only they can share a prefilled prefix.
    :raises ValueError: if ``min_prefix_tokens`` < 1 or the lengths differ.
    """
    if min_prefix_tokens < 1:
        raise ValueError(f"min_prefix_tokens must be at least 1, got {min_prefix_tokens}")
    if len(prompts) != len(keys):
        raise ValueError(f"{len(prompts)} prompts but {len(keys)} affinity keys")
    buckets: dict[tuple[str, tuple[int, ...] | int], list[int]] = {}
    for index, (prompt, key) in enumerate(zip(prompts, keys, strict=True)):
        # A prompt shorter than the threshold shares nothing worth prefilling: alone.
        head = tuple(prompt[:min_prefix_tokens]) if len(prompt) >= min_prefix_tokens else index
        buckets.setdefault((key, head), []).append(index)
    groups = []
    for (key, _), members in buckets.items():
        prefix: tuple[int, ...] = ()
        if len(members) > 1:
            shared = common_prefix_length([prompts[i] for i in members])
            prefix = tuple(prompts[members[0]][:shared])
        groups.append(FanoutGroup(key=key, members=tuple(members), prefix_ids=prefix))
    return groups
