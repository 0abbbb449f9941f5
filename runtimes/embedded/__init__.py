"""The embedded runtime: SmolLM2 (or any Llama/Qwen2/Qwen3 HF checkpoint) in process, on a
paged, prefix-sharing KV cache, with sequence handles, shared segments and grammars.

Layout after nano-vllm: ``config`` → ``weights`` → ``model`` + ``attention/`` →
``block_manager`` + ``scheduler`` + ``model_runner`` + ``sampler`` → ``engine`` →
``runtime`` + ``handles``; ``plugin`` registers it; ``testing`` makes small random models.
"""

from __future__ import annotations

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
