"""Configuration: what the model is (read from ``config.json``) and how the engine runs it.

Two frozen dataclasses, data only. :class:`ModelConfig` is parsed once from a Hugging Face
``config.json`` (Llama, Qwen2, Qwen3); anything our forward does not implement (rope scaling,
sliding windows) is refused here with a :class:`~orchestrator.ConfigError` naming the field,
rather than silently producing different logits. :class:`EngineConfig` holds the knobs of
the paged KV cache and the scheduler; ``kv_cache_bytes`` is the memory budget from which the
number of blocks is derived.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from orchestrator import ConfigError

__all__ = ["DTYPES", "EngineConfig", "ModelConfig"]

_SUPPORTED = ("llama", "qwen2", "qwen3")
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> ModelConfig:
        """Parse a ``config.json`` dict.

        :raises ConfigError: if the architecture or a feature of it is not implemented.
        """
        model_type = raw.get("model_type", "")
        if model_type not in _SUPPORTED:
            raise ConfigError(
                f"model type {model_type!r} is not supported (supported: {', '.join(_SUPPORTED)})",
                field="model_type",
            )
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None):
            raise ConfigError(f"rope type {rope_type!r} is not supported", field="rope_scaling")
        if raw.get("use_sliding_window"):
            raise ConfigError("sliding-window attention is not supported", field="sliding_window")
        theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
        num_heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(raw.get("head_dim") or hidden // num_heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            max_position=int(raw.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type == "qwen3",
            eos_token_ids=eos_ids,
        )

    def truncated(self, num_layers: int) -> ModelConfig:
        """The first-``num_layers`` draft variant (early exit through the final norm).

        :raises ConfigError: if ``num_layers`` is not in ``1..num_layers``.
        """
        if not 1 <= num_layers <= self.num_layers:
            raise ConfigError(
                f"must be between 1 and {self.num_layers}, got {num_layers}", field="layers"
            )
        return dataclasses.replace(self, num_layers=num_layers)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element


@dataclasses.dataclass(frozen=True, slots=True)
class EngineConfig:
    """Knobs of the engine.

    :ivar block_size: tokens per KV block (the unit of sharing, copying and eviction).
    :ivar kv_cache_bytes: memory budget of the block pool; ``num_blocks`` derives from it.
    :ivar max_num_seqs: batch capacity: request sequences admitted at once.
    :ivar max_num_batched_tokens: tokens per forward step (decode rows + prefill chunks).
    :ivar attention: name of the attention backend for plain sequences.
    :ivar max_context: context length override (defaults to the model's).
    """

    device: str = "cpu"
    dtype: str = "fp32"
    block_size: int = 16
    kv_cache_bytes: int = 512 * 2**20
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    attention: str = "sdpa"
    max_context: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"unknown dtype {self.dtype!r} (known: {', '.join(DTYPES)})", field="dtype"
            )
        for name in ("block_size", "kv_cache_bytes", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be positive, got {getattr(self, name)}", field=name)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def num_blocks(self, model: ModelConfig) -> int:
        """Blocks that fit in ``kv_cache_bytes``.

        :raises ConfigError: if not even one block fits.
        """
        per_block = model.kv_bytes_per_token(self.torch_dtype) * self.block_size
        count = self.kv_cache_bytes // per_block
        if count < 1:
            raise ConfigError(
                f"{self.kv_cache_bytes} bytes hold no KV block of {per_block} bytes",
                field="kv_cache_bytes",
            )
        return count
