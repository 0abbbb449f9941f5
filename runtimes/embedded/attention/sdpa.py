"""The default backend: gather each row's blocks into a dense tensor and call
``torch.nn.functional.scaled_dot_product_attention``.

Decode rows (one query each) are the common case under continuous batching, so they are
padded to the longest context and served by one SDPA call for the whole batch; grouped-query
attention is expressed by viewing the queries as ``[B, kv_heads, group, D]`` rather than
repeating keys. When all decode rows start with the same slots (a shared prompt, ``n``
samples, forks), that prefix is gathered once instead of once per row, and attended once
for all queries (cascade attention, merged by log-sum-exp): on CPU the gather's memory
traffic, not the arithmetic, is what attention costs. The scheduler puts decode rows
first, so their queries are a slice, not a gather. Prefill chunks are served one SDPA call
per row (there are few per step), with a causal mask offset by the tokens already in the
cache. Only single-piece rows (plain
sequences) are supported; views go to the segment backend.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .base import AttentionBackend, Row
from .segment import merge_states

__all__ = ["SdpaBackend"]

#: Shortest common prefix (tokens) worth attending once for all decode rows.
_MIN_SHARED = 64


@dataclasses.dataclass(slots=True)
class _DecodePlan:
    rows: slice | torch.Tensor  # where the decode queries are among the rows' tokens
    slots: torch.Tensor  # [B * L_max] padded key slots (after the shared prefix, if any)
    mask: torch.Tensor  # [B, 1, 1, L_max] True where a key is visible
    batch: int
    max_len: int
    prefix: torch.Tensor | None = None  # [L_p] slots every row starts with (cascade)


@dataclasses.dataclass(slots=True)
class _PrefillPlan:
    start: int
    num_tokens: int
    slots: torch.Tensor  # [L]
    mask: torch.Tensor | None  # [n, L]; None: plain causal from position 0


@dataclasses.dataclass(slots=True)
class _Plan:
    num_tokens: int
    decode: _DecodePlan | None
    prefills: list[_PrefillPlan]


class SdpaBackend(AttentionBackend):
    name = "sdpa"

    def supports(self, row: Row) -> bool:
        return len(row.pieces) == 1 and row.pieces[0].causal and row.pieces[0].query_shift == 0

    def _decode_plan(self, rows: list[Row]) -> _DecodePlan:
        device = self.cache.kv.device
        lengths = [r.first_position + 1 for r in rows]
        max_len = max(lengths)
        slots = torch.zeros((len(rows), max_len), dtype=torch.int64, device=device)
        for i, (row, length) in enumerate(zip(rows, lengths, strict=True)):
            slots[i, :length] = row.pieces[0].slots[:length]
        starts = [r.start for r in rows]
        where: slice | torch.Tensor = (
            slice(starts[0], starts[0] + len(rows))
            if starts == list(range(starts[0], starts[0] + len(rows)))
            else torch.tensor(starts, device=device)
        )
        shared = 0
        if len(rows) > 1:  # the leading slots every row has (a common prompt, forks)
            head = min(lengths) - 1
            same = (slots[:, :head] == slots[:1, :head]).all(0)
            shared = int(torch.cumprod(same.int(), 0).sum()) if head > 0 else 0
        prefix = None
        if shared >= _MIN_SHARED:
            prefix, slots = slots[0, :shared], slots[:, shared:]
            lengths = [n - shared for n in lengths]
            max_len -= shared
        visible = (
            torch.arange(max_len, device=device)[None, :]
            < torch.tensor(lengths, device=device)[:, None]
        )
        return _DecodePlan(
            where, slots.reshape(-1), visible[:, None, None, :], len(rows), max_len, prefix
        )

    def plan(self, rows: list[Row], dtype: torch.dtype) -> _Plan:
        device = self.cache.kv.device
        decode_rows = [r for r in rows if r.num_tokens == 1]
        prefills = []
        for row in rows:
            if row.num_tokens == 1:
                continue
            end = row.first_position + row.num_tokens
            mask = None
            if row.first_position:
                positions = torch.arange(row.first_position, end, device=device)
                mask = torch.arange(end, device=device)[None, :] <= positions[:, None]
            prefills.append(
                _PrefillPlan(row.start, row.num_tokens, row.pieces[0].slots[:end], mask)
            )
        decode = self._decode_plan(decode_rows) if decode_rows else None
        return _Plan(sum(r.num_tokens for r in rows), decode, prefills)

    def forward(self, layer: int, q: torch.Tensor, plan: object) -> torch.Tensor:
        # q: [T, num_heads, head_dim], rotated
        assert isinstance(plan, _Plan) and q.shape[0] == plan.num_tokens
        num_kv, dim = self.cache.num_kv_heads, q.shape[-1]
        out = torch.empty_like(q)
        if (d := plan.decode) is not None:
            qd = q[d.rows].view(d.batch, num_kv, -1, dim)  # [B, kv_heads, group, D]
            k, v = self.cache.gather(layer, d.slots)
            k = k.view(d.batch, d.max_len, num_kv, dim).transpose(1, 2)
            v = v.view(d.batch, d.max_len, num_kv, dim).transpose(1, 2)
            if d.prefix is None:
                o = F.scaled_dot_product_attention(qd, k, v, attn_mask=d.mask)
            else:
                o = self._cascade(layer, qd, k, v, d)
            out[d.rows] = o.reshape(d.batch, -1, dim)
        for p in plan.prefills:
            qp = q[p.start : p.start + p.num_tokens].transpose(0, 1)
            k, v = self.cache.gather(layer, p.slots)  # [L, kv_heads, D]
            o = F.scaled_dot_product_attention(
                qp,
                k.transpose(0, 1),
                v.transpose(0, 1),
                attn_mask=p.mask,
                is_causal=p.mask is None,
                enable_gqa=True,
            )
            out[p.start : p.start + p.num_tokens] = o.transpose(0, 1)
        return out

    def _cascade(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: _DecodePlan
    ) -> torch.Tensor:
        """Decode attention when every row starts with the same KV (a shared prompt): that
        prefix is gathered and attended once for all rows' queries, each row's own rest
        separately, and the two merged exactly by log-sum-exp (FlashInfer's cascade).

        # q: [B, kv, G, D]; k, v: [B, kv, L, D] (rows' own keys) -> [B, kv, G, D]
        """
        assert d.prefix is not None
        batch, num_kv, group, dim = q.shape
        scale = dim**-0.5
        kp, vp = self.cache.gather(layer, d.prefix)  # [L_p, kv, D]
        shared_q = q.permute(1, 0, 2, 3).reshape(num_kv, batch * group, dim)
        scores = torch.matmul(shared_q, kp.permute(1, 2, 0)) * scale  # [kv, B*G, L_p]
        lse_shared = scores.logsumexp(-1)
        out_shared = torch.matmul(torch.exp(scores - lse_shared[..., None]), vp.transpose(0, 1))
        out_shared = out_shared.view(num_kv, batch, group, dim).transpose(0, 1)
        lse_shared = lse_shared.view(num_kv, batch, group).transpose(0, 1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, kv, G, L]
        scores = scores.masked_fill(~d.mask, float("-inf"))
        lse_own = scores.logsumexp(-1)
        out_own = torch.matmul(torch.exp(scores - lse_own[..., None]), v)
        return merge_states([out_shared, out_own], [lse_shared, lse_own])
