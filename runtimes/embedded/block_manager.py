"""The block manager: reference-counted KV blocks, a radix prefix index, LRU eviction.

It owns the KV invariants (style.md §10); the scheduler and handles only ask it for blocks.

- A sequence's KV is a *block table*; a block may be in several tables (forks, prefix hits)
  and counts its references. Only full blocks are shared: a sequence's partial last block
  is always private, so appending never writes into someone else's KV.
- The prefix index is a radix tree whose edges are the token tuples of full blocks; a path
  from the root is a token prefix and its nodes are the blocks holding that prefix's KV.
  Blocks are indexed *when allocated*, before they are computed (``computed=False``, with a
  ``producer``): a request arriving while another computes the same prefix finds those
  blocks, takes references and waits for them instead of computing them again (in-flight
  dedup). If the producer goes away first, a waiter claims the block and computes it.
- An unreferenced computed block stays indexed and is evicted least-recently-used when the
  pool runs out; an unreferenced uncomputed block is dropped at once. Because any table
  holding a block also holds its ancestors, evicting a node never strands a live child.
- Accounting is exact: ``statistics().blocks_in_use`` counts blocks with references, and
  returns to zero when every sequence is released (tests assert it after every scenario).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["BlockManager", "BlockStatistics"]


class BlockStatistics(NamedTuple):
    num_blocks: int
    blocks_in_use: int
    blocks_cached: int
    blocks_free: int
    num_evictions: int


class _Node:
    __slots__ = ("block_id", "children", "key", "parent")

    def __init__(self, key: tuple[int, ...], block_id: int, parent: _Node | None) -> None:
        self.key = key
        self.block_id = block_id
        self.parent = parent
        self.children: dict[tuple[int, ...], _Node] = {}


class Block:
    __slots__ = ("block_id", "computed", "node", "producer", "ref_count")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.node: _Node | None = None
        self.computed = False
        self.producer: int | None = None  # seq id computing an indexed, uncomputed block


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: collections.deque[int] = collections.deque(range(num_blocks))
        self._lru: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._root = _Node((), -1, None)
        self._num_evictions = 0

    @property
    def num_available(self) -> int:
        """Blocks an allocation can get: free ones plus evictable cached ones."""
        return len(self._free) + len(self._lru)

    def statistics(self) -> BlockStatistics:
        num = len(self.blocks)
        cached, free = len(self._lru), len(self._free)
        return BlockStatistics(num, num - cached - free, cached, free, self._num_evictions)

    def allocate(self) -> int:
        """A fresh private block with one reference. Callers check ``num_available`` first."""
        if self._free:
            block_id = self._free.popleft()
        else:
            block_id, _ = self._lru.popitem(last=False)
            self._unlink(self.blocks[block_id].node, reuse=block_id)
            self._num_evictions += 1
        block = self.blocks[block_id]
        assert block.ref_count == 0 and block.node is None
        block.ref_count, block.computed, block.producer = 1, False, None
        return block_id

    def acquire(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            self._lru.pop(block_id)
        block.ref_count += 1

    def release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        assert block.ref_count > 0, f"block {block_id} released more often than acquired"
        block.ref_count -= 1
        if block.ref_count:
            return
        if block.node is not None and block.computed:
            self._lru[block_id] = None
            return
        if block.node is not None:
            self._unlink(block.node)
        else:
            self._free.append(block_id)

    def release_all(self, block_ids: Sequence[int]) -> None:
        # Last block first: descendants enter the LRU before their ancestors, so they are
        # evicted first and the tree is pruned from its leaves.
        for block_id in reversed(block_ids):
            self.release(block_id)

    def is_private(self, block_id: int) -> bool:
        """Whether a sequence may write into the block: one reference and not indexed."""
        block = self.blocks[block_id]
        return block.ref_count == 1 and block.node is None

    def match(self, token_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Indexed blocks holding a prefix of ``token_ids[:max_tokens]`` (full blocks only),
        computed or in flight. The caller acquires the ones it keeps."""
        bs, node, found = self.block_size, self._root, []
        for i in range(max_tokens // bs):
            child = node.children.get(tuple(token_ids[i * bs : (i + 1) * bs]))
            if child is None:
                break
            found.append(child.block_id)
            node = child
        return found

    def register(
        self, parent_id: int | None, key: tuple[int, ...], block_id: int, producer: int | None
    ) -> bool:
        """Index full block ``block_id`` holding tokens ``key`` after block ``parent_id``
        (None: at the root). Returns False (and indexes nothing) if the parent is not
        indexed or the same content is already indexed."""
        block = self.blocks[block_id]
        assert len(key) == self.block_size and block.node is None
        parent = self._root if parent_id is None else self.blocks[parent_id].node
        if parent is None or key in parent.children:
            return False
        block.node = _Node(key, block_id, parent)
        parent.children[key] = block.node
        block.producer = None if block.computed else producer
        return True

    def mark_computed(self, block_id: int) -> None:
        block = self.blocks[block_id]
        block.computed, block.producer = True, None

    def _unlink(self, node: _Node | None, reuse: int | None = None) -> None:
        """Remove ``node``'s subtree from the index; its blocks (unreferenced, as every table
        holding a block also holds its ancestors) become free, except ``reuse``."""
        assert node is not None
        if node.parent is not None:
            del node.parent.children[node.key]
        stack = [node]
        while stack:
            current = stack.pop()
            stack.extend(current.children.values())
            block = self.blocks[current.block_id]
            assert block.ref_count == 0, "an indexed block outlived its ancestor"
            block.node = None
            self._lru.pop(current.block_id, None)
            if current.block_id != reuse:
                self._free.append(current.block_id)
