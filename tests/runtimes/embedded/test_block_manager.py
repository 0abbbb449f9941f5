"""Block manager: reference counts, the radix prefix index, in-flight blocks, LRU eviction."""

from __future__ import annotations

import pytest
from orchestrator.runtimes.embedded.block_manager import BlockManager, BlockStatistics


@pytest.fixture
def blocks() -> BlockManager:
    return BlockManager(num_blocks=4, block_size=2)


def test_allocate_acquire_release_count_exactly(blocks: BlockManager) -> None:
    a = blocks.allocate()
    blocks.acquire(a)
    assert blocks.statistics() == BlockStatistics(4, 1, 0, 3, 0)
    blocks.release(a)
    assert blocks.is_private(a)
    blocks.release(a)
    assert blocks.statistics() == BlockStatistics(4, 0, 0, 4, 0)
    with pytest.raises(AssertionError, match=f"block {a} released more often than acquired"):
        blocks.release(a)


def test_computed_blocks_are_found_by_prefix_and_cached_after_release(blocks: BlockManager) -> None:
    a, b = blocks.allocate(), blocks.allocate()
    assert blocks.register(None, (1, 2), a, producer=7)
    assert blocks.register(a, (3, 4), b, producer=7)
    assert not blocks.register(None, (1, 2), blocks.allocate(), producer=8)  # same content
    assert blocks.blocks[a].producer == 7 and not blocks.blocks[a].computed
    blocks.mark_computed(a)
    blocks.mark_computed(b)
    assert blocks.match([1, 2, 3, 4, 5], max_tokens=5) == [a, b]
    assert blocks.match([1, 2, 3, 4, 5], max_tokens=3) == [a]  # full blocks only
    assert blocks.match([1, 9, 3, 4], max_tokens=4) == []
    blocks.release_all([a, b])
    assert blocks.statistics() == BlockStatistics(4, 1, 2, 1, 0)
    blocks.acquire(a)  # a prefix hit revives a cached block
    assert blocks.statistics() == BlockStatistics(4, 2, 1, 1, 0)
    assert not blocks.is_private(a)  # indexed: never written in place


def test_an_uncomputed_block_nobody_holds_leaves_the_index(blocks: BlockManager) -> None:
    a = blocks.allocate()
    blocks.register(None, (1, 2), a, producer=1)
    blocks.acquire(a)  # a second request waits for it
    blocks.release(a)  # the producer is cancelled
    assert blocks.match([1, 2], 2) == [a]
    blocks.release(a)  # the waiter too
    assert blocks.match([1, 2], 2) == []
    assert blocks.statistics() == BlockStatistics(4, 0, 0, 4, 0)


def test_eviction_is_lru_and_prunes_subtrees(blocks: BlockManager) -> None:
    def cached_chain(tokens: list[int]) -> list[int]:
        ids, parent = [], None
        for i in range(0, len(tokens), 2):
            block = blocks.allocate()
            blocks.mark_computed(block)
            blocks.register(parent, tuple(tokens[i : i + 2]), block, None)
            ids.append(block)
            parent = block
        return ids

    old = cached_chain([1, 2, 3, 4])
    blocks.release_all(old)
    new = cached_chain([5, 6])
    blocks.release_all(new)
    assert blocks.statistics() == BlockStatistics(4, 0, 3, 1, 0)
    taken = [blocks.allocate() for _ in range(2)]  # the free block, then the LRU leaf [3, 4]
    assert taken[1] == old[1]
    assert blocks.match([1, 2, 3, 4], 4) == [old[0]]
    assert blocks.statistics().num_evictions == 1
    blocks.allocate()  # evicts [1, 2]; [5, 6] was used more recently
    assert blocks.match([1, 2], 2) == [] and blocks.match([5, 6], 2) == [new[0]]


def test_evicting_a_parent_frees_its_cached_children(blocks: BlockManager) -> None:
    a, b = blocks.allocate(), blocks.allocate()
    for block, parent, key in ((a, None, (1, 2)), (b, a, (3, 4))):
        blocks.mark_computed(block)
        blocks.register(parent, key, block, None)
    blocks.release(a)  # parent first: it becomes the older LRU entry
    blocks.release(b)
    for _ in range(3):
        blocks.allocate()
    assert blocks.statistics() == BlockStatistics(4, 3, 0, 1, 1)
    assert blocks.match([1, 2, 3, 4], 4) == []
