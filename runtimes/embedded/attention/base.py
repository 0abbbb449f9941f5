"""The attention seam: a paged KV pool, rotary embeddings, and the backend interface.

A forward step is a flat list of tokens from many sequences ("rows"). Each row attends to one
or more *pieces* of KV: a plain sequence has one causal piece (its own blocks); a view built
from shared segments has one piece per segment plus its own. Keys are always stored rotated
at their position *inside the physical sequence that computed them*; a piece placed
elsewhere in a view is read by rotating the query instead (``query_shift``), so segments
are shared and can grow without re-rotating any key (Hogwild!'s query rotation,
methods.md §3). Backends turn the rows of a step into a plan once per step, then run one
layer at a time from that plan; the model never sees pages or pieces.
"""

from __future__ import annotations

import abc
import dataclasses

import torch

__all__ = ["AttentionBackend", "KVCache", "Piece", "Rope", "Row"]


class KVCache:
    """The block pool: per layer, ``num_blocks * block_size`` slots of K and V.

    K and V of a slot sit side by side, so one ``index_select`` gathers both.
    # kv: [num_layers, num_slots, 2 * num_kv_heads, head_dim]  (K heads, then V heads)
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_layers, num_blocks * block_size, 2 * num_kv_heads, head_dim)
        # empty, not zeros: untouched pages of a large budget cost no memory on CPU.
        self.kv = torch.empty(shape, dtype=dtype, device=device)
        self.k = self.kv[:, :, :num_kv_heads]
        self.v = self.kv[:, :, num_kv_heads:]
        self.num_kv_heads = num_kv_heads
        self.block_size = block_size
        self.num_blocks = num_blocks

    def store(self, layer: int, slot_mapping: torch.Tensor, kv: torch.Tensor) -> None:
        # kv: [T, 2 * num_kv_heads, head_dim] (rotated K, then V); slot_mapping: [T]
        assert kv.shape[0] == slot_mapping.shape[0]
        self.kv[layer].index_copy_(0, slot_mapping, kv)

    def gather(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V at ``slots``. # slots: [N] -> k, v: [N, num_kv_heads, head_dim]"""
        kv = self.kv[layer].index_select(0, slots)
        return kv[:, : self.num_kv_heads], kv[:, self.num_kv_heads :]

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        """Copy the first ``num_tokens`` slots of block ``src`` into block ``dst``, all layers."""
        bs = self.block_size
        self.kv[:, dst * bs : dst * bs + num_tokens] = self.kv[:, src * bs : src * bs + num_tokens]


class Rope:
    """Rotary embeddings (rotate-half layout, as in HF Llama), computed from positions on the
    fly: view queries may be rotated to positions outside ``[0, max_position)``."""

    def __init__(self, head_dim: int, theta: float, device: torch.device) -> None:
        exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        self.inv_freq = (1.0 / (theta**exponent)).to(device)

    def cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [n] -> cos, sin: [n, 1, head_dim], broadcast over heads
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: [n, heads, head_dim]
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """A KV range a row attends to.

    :ivar slots: pool slots of the keys, in stored-position order; ``[L]`` int64.
    :ivar query_shift: queries are read at ``stored query position + query_shift`` (the
        backend rotates the already rotated query by ``query_shift``: rotations compose).
    :ivar causal: key ``j`` is visible to a query at stored position ``p`` iff ``j <= p``
        (the row's own piece); otherwise every key is visible.
    """

    slots: torch.Tensor
    query_shift: int = 0
    causal: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """The tokens of one sequence in a step: flat tokens ``[start, start + num_tokens)``,
    stored at positions ``first_position ...``."""

    start: int
    num_tokens: int
    first_position: int
    pieces: tuple[Piece, ...]


class AttentionBackend(abc.ABC):
    """One attention implementation. ``plan`` runs once per step, ``forward`` once per layer.

    A backend may refuse rows it cannot serve (``supports``); the runner sends rows with
    several pieces to a backend that supports them.
    """

    name: str

    def __init__(self, cache: KVCache, rope: Rope, num_heads: int) -> None:
        self.cache = cache
        self.rope = rope
        self.num_heads = num_heads

    @abc.abstractmethod
    def supports(self, row: Row) -> bool: ...

    @abc.abstractmethod
    def plan(self, rows: list[Row], dtype: torch.dtype) -> object:
        """Precompute gather indices, masks and rotations for ``rows`` (every layer uses it)."""

    @abc.abstractmethod
    def forward(self, layer: int, q: torch.Tensor, plan: object) -> torch.Tensor:
        """Attend the rows' queries, rotated at their stored positions, to the pool.

        # q: [T_rows, num_heads, head_dim] (the rows' tokens, in row order) -> same shape
        """
