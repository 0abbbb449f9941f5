"""Attention backends against a dense reference: the segment backend's per-piece query
rotation and log-sum-exp merge must equal one softmax over keys rotated to their view
positions, whatever the offsets (overlapping, ParaThinker-style, or gapped)."""

from __future__ import annotations

import math

import pytest
import torch
from orchestrator.runtimes.embedded.attention import (
    KVCache,
    Piece,
    Rope,
    Row,
    SdpaBackend,
    SegmentBackend,
    merge_states,
)

HEADS, KV_HEADS, DIM = 4, 2, 16


def setup_pool(seed: int) -> tuple[KVCache, Rope, torch.Tensor]:
    """A pool whose slots hold raw (unrotated) keys, returned alongside for the reference."""
    torch.manual_seed(seed)
    cache = KVCache(1, 16, 4, KV_HEADS, DIM, dtype=torch.float32, device=torch.device("cpu"))
    raw_keys = torch.randn(64, KV_HEADS, DIM)
    cache.v[0] = torch.randn(64, KV_HEADS, DIM)
    return cache, Rope(DIM, 10000.0, torch.device("cpu")), raw_keys


def store_rotated(
    cache: KVCache, rope: Rope, raw: torch.Tensor, slots: torch.Tensor, first: int
) -> None:
    cos, sin = rope.cos_sin(torch.arange(first, first + len(slots)), torch.float32)
    cache.k[0, slots] = Rope.apply(raw[slots], cos, sin)


def reference(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor
) -> torch.Tensor:
    # q: [n, H, D] rotated; keys/values: [L, KV, D] rotated; visible: [n, L]
    group = HEADS // KV_HEADS
    k = keys.repeat_interleave(group, dim=1)
    v = values.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q, k) / math.sqrt(DIM)
    scores = scores.masked_fill(~visible[None], float("-inf"))
    return torch.einsum("hnl,lhd->nhd", scores.softmax(-1), v)


@pytest.mark.parametrize("offsets", [(0, 10), (3, 3), (0, 40)])
def test_segment_backend_equals_one_softmax_over_placed_keys(offsets: tuple[int, int]) -> None:
    cache, rope, raw = setup_pool(0)
    # Two foreign pieces (stored at positions 5.. and 0.. of their own sequences), placed at
    # view offsets; then the row's own 3 tokens after the furthest one.
    a_slots, b_slots, own_slots = torch.arange(0, 7), torch.arange(20, 26), torch.arange(40, 43)
    store_rotated(cache, rope, raw, a_slots, first=5)
    store_rotated(cache, rope, raw, b_slots, first=0)
    store_rotated(cache, rope, raw, own_slots, first=0)
    own_offset = max(offsets[0] + 7, offsets[1] + 6)
    pieces = (
        Piece(a_slots, own_offset - offsets[0] + 5, causal=False),
        Piece(b_slots, own_offset - offsets[1] + 0, causal=False),
        Piece(own_slots),
    )
    q = torch.randn(2, HEADS, DIM)  # the own piece's last two tokens (positions 1, 2)
    stored = Rope.apply(q, *rope.cos_sin(torch.tensor([1, 2]), torch.float32))
    backend = SegmentBackend(cache, rope, HEADS)
    out = backend.forward(0, stored, backend.plan([Row(0, 2, 1, pieces)], torch.float32))

    view_positions = torch.cat(
        [
            torch.arange(offsets[0], offsets[0] + 7),
            torch.arange(offsets[1], offsets[1] + 6),
            torch.arange(own_offset, own_offset + 3),
        ]
    )
    slots = torch.cat([a_slots, b_slots, own_slots])
    cos, sin = rope.cos_sin(view_positions, torch.float32)
    keys = Rope.apply(raw[slots], cos, sin)
    q_cos, q_sin = rope.cos_sin(torch.tensor([own_offset + 1, own_offset + 2]), torch.float32)
    visible = torch.ones(2, 16, dtype=torch.bool)
    visible[0, 15] = False  # own token 2 is in the future of own token 1
    expected = reference(Rope.apply(q, q_cos, q_sin), keys, cache.v[0, slots], visible)
    assert torch.allclose(out, expected, atol=1e-5)


def test_sdpa_backend_decode_and_prefill_rows_agree_with_reference() -> None:
    cache, rope, raw = setup_pool(1)
    slots_a, slots_b = torch.arange(0, 9), torch.arange(16, 21)
    store_rotated(cache, rope, raw, slots_a, 0)
    store_rotated(cache, rope, raw, slots_b, 0)
    rows = [Row(0, 1, 8, (Piece(slots_a),)), Row(1, 3, 2, (Piece(slots_b),))]
    q = torch.randn(4, HEADS, DIM)
    positions = torch.tensor([8, 2, 3, 4])
    q = Rope.apply(q, *rope.cos_sin(positions, torch.float32))  # rotated, as the model does
    backend = SdpaBackend(cache, rope, HEADS)
    out = backend.forward(0, q, backend.plan(rows, torch.float32))
    for row, slots in zip(rows, (slots_a, slots_b), strict=True):
        positions = torch.arange(row.first_position, row.first_position + row.num_tokens)
        q_row = q[row.start : row.start + row.num_tokens]
        visible = torch.arange(len(slots))[None, :] <= positions[:, None]
        expected = reference(q_row, cache.k[0, slots], cache.v[0, slots], visible)
        assert torch.allclose(out[row.start : row.start + row.num_tokens], expected, atol=1e-5)


def test_merge_states_of_a_split_softmax_is_exact() -> None:
    torch.manual_seed(2)
    scores, values = torch.randn(3, 10), torch.randn(10, 4)
    whole = scores.softmax(-1) @ values
    parts = [(scores[:, :4], values[:4]), (scores[:, 4:], values[4:])]
    outs = [s.softmax(-1) @ v for s, v in parts]
    lses = [s.logsumexp(-1) for s, _ in parts]
    assert torch.allclose(merge_states(outs, lses), whole, atol=1e-6)


def test_sdpa_cascade_over_a_shared_prefix_agrees_with_reference() -> None:
    cache = KVCache(1, 64, 4, KV_HEADS, DIM, dtype=torch.float32, device=torch.device("cpu"))
    rope = Rope(DIM, 10000.0, torch.device("cpu"))
    generator = torch.Generator().manual_seed(3)
    cache.kv[0] = torch.randn(256, 2 * KV_HEADS, DIM, generator=generator)
    shared = torch.arange(0, 80)  # 80 slots every row starts with: the cascade path
    own = [torch.arange(100, 103), torch.arange(120, 130), torch.arange(140, 141)]
    rows = [Row(i, 1, 80 + len(o) - 1, (Piece(torch.cat([shared, o])),)) for i, o in enumerate(own)]
    q = torch.randn(3, HEADS, DIM, generator=generator)
    backend = SdpaBackend(cache, rope, HEADS)
    plan = backend.plan(rows, torch.float32)
    assert plan.decode is not None and plan.decode.prefix is not None
    out = backend.forward(0, q, plan)
    for i, row in enumerate(rows):
        slots = row.pieces[0].slots
        visible = torch.ones(1, len(slots), dtype=torch.bool)
        expected = reference(q[i : i + 1], cache.k[0, slots], cache.v[0, slots], visible)
        assert torch.allclose(out[i : i + 1], expected, atol=1e-5)
