"""Attention backends of the embedded runtime, chosen by name (see ``plugin.py``)."""

from __future__ import annotations

import types
from collections.abc import Mapping

from .base import AttentionBackend, KVCache, Piece, Rope, Row
from .sdpa import SdpaBackend
from .segment import SegmentBackend, merge_states

__all__ = [
    "BACKENDS",
    "AttentionBackend",
    "KVCache",
    "Piece",
    "Rope",
    "Row",
    "SdpaBackend",
    "SegmentBackend",
    "merge_states",
]

#: The built-in backends by name; the plugin registers these through the core's hook.
BACKENDS: Mapping[str, type[AttentionBackend]] = types.MappingProxyType(
    {"sdpa": SdpaBackend, "segment": SegmentBackend}
)
