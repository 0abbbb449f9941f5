"""The default backend: gather each row's blocks into a dense tensor and call
``torch.nn.functional.scaled_dot_product_attention``.

Decode rows (one query each) are the common case under continuous batching, so they are
padded to the longest context and served by one SDPA call for the whole batch; grouped-query
attention is expressed by viewing the queries as ``[B, kv_heads, group, D]`` rather than
repeating keys. Prefill chunks are served one SDPA call per row (there are few per step),
with a causal mask offset by the tokens already in the cache. Only single-piece rows (plain
sequences) are supported; views go to the segment backend.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .base import AttentionBackend, Row

__all__ = ["SdpaBackend"]


@dataclasses.dataclass(slots=True)
class _DecodePlan:
    token_index: torch.Tensor  # [B] positions of the decode tokens among the rows' tokens
    slots: torch.Tensor  # [B, L_max] padded key slots
    mask: torch.Tensor  # [B, 1, 1, L_max] True where a key is visible
    cos: torch.Tensor
    sin: torch.Tensor


@dataclasses.dataclass(slots=True)
class _PrefillPlan:
    start: int
    num_tokens: int
    slots: torch.Tensor  # [L]
    mask: torch.Tensor | None  # [n, L]; None: plain causal from position 0
    cos: torch.Tensor
    sin: torch.Tensor


@dataclasses.dataclass(slots=True)
class _Plan:
    num_tokens: int
    decode: _DecodePlan | None
    prefills: list[_PrefillPlan]


class SdpaBackend(AttentionBackend):
    name = "sdpa"

    def supports(self, row: Row) -> bool:
        return len(row.pieces) == 1 and row.pieces[0].causal and row.pieces[0].query_shift == 0

    def plan(self, rows: list[Row], dtype: torch.dtype) -> _Plan:
        device = self.cache.k.device
        decode_rows = [r for r in rows if r.num_tokens == 1]
        decode = None
        if decode_rows:
            lengths = torch.tensor([r.first_position + 1 for r in decode_rows], device=device)
            max_len = int(lengths.max())
            slots = torch.zeros((len(decode_rows), max_len), dtype=torch.int64, device=device)
            for i, row in enumerate(decode_rows):
                slots[i, : row.first_position + 1] = row.pieces[0].slots[: row.first_position + 1]
            mask = torch.arange(max_len, device=device)[None, :] < lengths[:, None]
            cos, sin = self.rope.cos_sin(lengths - 1, dtype)
            index = torch.tensor([r.start for r in decode_rows], device=device)
            decode = _DecodePlan(index, slots, mask[:, None, None, :], cos, sin)
        prefills = []
        for row in rows:
            if row.num_tokens == 1:
                continue
            end = row.first_position + row.num_tokens
            positions = torch.arange(row.first_position, end, device=device)
            mask = None
            if row.first_position:
                mask = torch.arange(end, device=device)[None, :] <= positions[:, None]
            cos, sin = self.rope.cos_sin(positions, dtype)
            slots = row.pieces[0].slots[:end]
            prefills.append(_PrefillPlan(row.start, row.num_tokens, slots, mask, cos, sin))
        num_tokens = sum(r.num_tokens for r in rows)
        return _Plan(num_tokens, decode, prefills)

    def forward(self, layer: int, q: torch.Tensor, plan: object) -> torch.Tensor:
        # q: [T, num_heads, head_dim] unrotated
        assert isinstance(plan, _Plan) and q.shape[0] == plan.num_tokens
        k_pool, v_pool = self.cache.k[layer], self.cache.v[layer]
        num_kv = k_pool.shape[1]
        out = torch.empty_like(q)
        if (d := plan.decode) is not None:
            batch, max_len = d.slots.shape
            qd = self.rope.apply(q[d.token_index], d.cos, d.sin)
            qd = qd.view(batch, num_kv, -1, q.shape[-1])  # [B, kv_heads, group, D]
            flat = d.slots.view(-1)
            k = k_pool.index_select(0, flat).view(batch, max_len, num_kv, -1).transpose(1, 2)
            v = v_pool.index_select(0, flat).view(batch, max_len, num_kv, -1).transpose(1, 2)
            o = F.scaled_dot_product_attention(qd, k, v, attn_mask=d.mask)
            out[d.token_index] = o.reshape(batch, -1, q.shape[-1])
        for p in plan.prefills:
            qp = self.rope.apply(q[p.start : p.start + p.num_tokens], p.cos, p.sin).transpose(0, 1)
            k = k_pool.index_select(0, p.slots).transpose(0, 1)  # [kv_heads, L, D]
            v = v_pool.index_select(0, p.slots).transpose(0, 1)
            o = F.scaled_dot_product_attention(
                qp, k, v, attn_mask=p.mask, is_causal=p.mask is None, enable_gqa=True
            )
            out[p.start : p.start + p.num_tokens] = o.transpose(0, 1)
        return out
