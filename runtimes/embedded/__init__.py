"""The embedded runtime: SmolLM2 (or any Llama/Qwen2/Qwen3 HF checkpoint) in process, on a
paged, prefix-sharing KV cache, with sequence handles, shared segments and grammars.

Layout after nano-vllm: ``config`` → ``weights`` → ``model`` + ``attention/`` →
``block_manager`` + ``scheduler`` + ``model_runner`` + ``sampler`` → ``engine`` →
``runtime`` + ``handles``; ``plugin`` registers it; ``testing`` makes small random models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .block_manager import BlockStatistics
    from .config import EngineConfig, ModelConfig
    from .handles import EmbeddedSequenceHandle
    from .runtime import EmbeddedRuntime
    from .testing import tiny_random_model

__all__ = [
    "BlockStatistics",
    "EmbeddedRuntime",
    "EmbeddedSequenceHandle",
    "EngineConfig",
    "ModelConfig",
    "tiny_random_model",
]

# Loaded on first use (PEP 562): the plugin module is imported whenever plugins load, and
# torch must not be imported for `orchestrator plugins list` or a run on another runtime.
_SOURCES = {
    "BlockStatistics": ".block_manager",
    "EmbeddedRuntime": ".runtime",
    "EmbeddedSequenceHandle": ".handles",
    "EngineConfig": ".config",
    "ModelConfig": ".config",
    "tiny_random_model": ".testing",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name], __name__), name)
