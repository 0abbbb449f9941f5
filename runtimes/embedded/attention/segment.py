"""The segment backend: a row attends to several KV pieces, each read with its own query
rotation, merged exactly with log-sum-exp (methods.md §3 "rotate queries + joint softmax",
§8 DAG joins).

Each piece is attended separately, producing an output ``o_p`` and the log-sum-exp ``l_p``
of its scores; ``sum_p exp(l_p - logsumexp(l)) * o_p`` equals one softmax over the union of
the pieces' keys (FlashInfer's merge-state). Keys never move or re-rotate: a piece placed at
view position ``v0`` whose keys were stored at ``s0...`` is read by rotating the query by
``s0 - v0`` relative to the view, which preserves every query-key distance. The own piece is
causal; foreign pieces are fully visible. Computation is in fp32 whatever the cache dtype,
so merges stay exact; it serves every row shape, so it also works as a general backend.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .base import AttentionBackend, Row

__all__ = ["SegmentBackend", "merge_states"]


@dataclasses.dataclass(slots=True)
class _PiecePlan:
    slots: torch.Tensor  # [L]
    shift: tuple[torch.Tensor, torch.Tensor] | None  # cos, sin [1, 1, D] of the query shift
    mask: torch.Tensor | None  # [n, L] for the causal piece


@dataclasses.dataclass(slots=True)
class _RowPlan:
    start: int
    num_tokens: int
    pieces: list[_PiecePlan]


def merge_states(outs: list[torch.Tensor], lses: list[torch.Tensor]) -> torch.Tensor:
    """Merge partial attention states. outs: [..., n, D] each; lses: [..., n] each."""
    lse = torch.stack(lses)  # [P, ..., n]
    weights = torch.softmax(lse, dim=0).unsqueeze(-1)
    return (weights * torch.stack(outs)).sum(0)


class SegmentBackend(AttentionBackend):
    name = "segment"

    def supports(self, row: Row) -> bool:
        return True

    def plan(self, rows: list[Row], dtype: torch.dtype) -> list[_RowPlan]:
        device = self.cache.k.device
        plans = []
        for row in rows:
            positions = torch.arange(
                row.first_position, row.first_position + row.num_tokens, device=device
            )
            pieces = []
            for piece in row.pieces:
                if piece.slots.numel() == 0:
                    continue
                shift = None
                if piece.query_shift:
                    shift_position = torch.tensor([piece.query_shift], device=device)
                    shift = self.rope.cos_sin(shift_position, torch.float32)
                mask = None
                if piece.causal:
                    keys = torch.arange(piece.slots.numel(), device=device)
                    mask = keys[None, :] <= positions[:, None]
                pieces.append(_PiecePlan(piece.slots, shift, mask))
            plans.append(_RowPlan(row.start, row.num_tokens, pieces))
        return plans

    def forward(self, layer: int, q: torch.Tensor, plan: object) -> torch.Tensor:
        # q: [T, num_heads, head_dim], rotated at the stored positions
        assert isinstance(plan, list)
        num_kv, dim = self.cache.num_kv_heads, q.shape[-1]
        scale = 1.0 / math.sqrt(dim)
        out = torch.empty_like(q)
        for row in plan:
            q_row = q[row.start : row.start + row.num_tokens].float()
            n = row.num_tokens
            group = q.shape[1] // num_kv
            outs, lses = [], []
            for piece in row.pieces:
                qr = q_row if piece.shift is None else self.rope.apply(q_row, *piece.shift)
                qr = qr.view(n, num_kv, group, dim).permute(1, 2, 0, 3)  # [kv, G, n, D]
                k, v = self.cache.gather(layer, piece.slots)
                k = k.float().permute(1, 2, 0)  # [kv, D, L]
                v = v.float().transpose(0, 1)  # [kv, L, D]
                scores = torch.matmul(qr, k.unsqueeze(1)) * scale  # [kv, G, n, L]
                if piece.mask is not None:
                    scores = scores.masked_fill(~piece.mask, float("-inf"))
                lse = torch.logsumexp(scores, dim=-1)  # [kv, G, n]
                probs = torch.exp(scores - lse.unsqueeze(-1))
                outs.append(torch.matmul(probs, v.unsqueeze(1)))  # [kv, G, n, D]
                lses.append(lse)
            merged = merge_states(outs, lses)  # [kv, G, n, D]
            out[row.start : row.start + n] = (
                merged.permute(2, 0, 1, 3).reshape(n, -1, dim).to(q.dtype)
            )
        return out
