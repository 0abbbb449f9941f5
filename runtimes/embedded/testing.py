"""Small random models for tests, here and in other test suites (graphs, plugins).

A seeded random Llama with SmolLM2's real tokenizer (so chat rendering and stop strings
behave as in production) runs a generation in milliseconds. The weights come from HF
transformers' own initialisation, so the same directory is a valid reference model for
parity tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .weights import copy_tokenizer, gguf_tokenizer_dir

__all__ = ["tiny_random_model"]


def tiny_random_model(
    directory: Path | str,
    seed: int = 0,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position: int = 2048,
    initializer_range: float = 0.1,
) -> Path:
    """Write a seeded random Llama (``config.json``, ``model.safetensors``, tokenizer files)
    to ``directory`` and return it. The same seed gives the same weights.

    The global torch RNG is left as it was.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    options: dict[str, Any] = dict(
        vocab_size=49152,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=initializer_range,
    )
    config = LlamaConfig(**options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(directory))
    copy_tokenizer(gguf_tokenizer_dir(), directory)
    return directory
