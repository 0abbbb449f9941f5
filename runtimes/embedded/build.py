"""Assembling a runtime's parts from a checkpoint: model, KV pool, backends, engine.

Kept apart from ``runtime.py`` so the protocol code does not deal with devices, dtypes and
weight formats. A spec ``embedded:TARGET?device=..&dtype=..&layers=k`` ends up here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from orchestrator import ConfigError, RuntimeUnavailable

from .attention import BACKENDS, AttentionBackend, KVCache, Rope, SegmentBackend
from .block_manager import BlockManager
from .config import EngineConfig, ModelConfig
from .engine import Engine
from .model import CausalLM
from .model_runner import ModelRunner
from .scheduler import Scheduler
from .tokenizer import ChatTokenizer
from .weights import load_checkpoint, materialize_gguf

__all__ = ["BackendFactory", "Components", "build"]

BackendFactory = Callable[[KVCache, Rope, int], AttentionBackend]
DEFAULT_MODEL = "SmolLM2-135M-Instruct"


@dataclasses.dataclass(frozen=True)
class Components:
    model_config: ModelConfig
    engine_config: EngineConfig
    tokenizer: ChatTokenizer
    engine: Engine
    max_context: int
    directory: Path


def _backend(name: str | BackendFactory) -> BackendFactory:
    if callable(name):
        return name
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(
            f"unknown attention backend {name!r} (known: {known})", field="attention"
        ) from None


def build(
    path: str | Path | None = None,
    *,
    layers: int | None = None,
    name: str | None = None,
    **options: Any,
) -> tuple[Components, str]:
    """Load weights and assemble the engine. Returns the parts and the model's name.

    :raises ConfigError: for an unknown path, option, dtype or backend.
    :raises RuntimeUnavailable: for corrupt weights or an unavailable device.
    """
    attention = options.pop("attention", "sdpa")
    if "dtype" not in options:
        options["dtype"] = (
            "bf16" if str(options.get("device", "cpu")).startswith("cuda") else "fp32"
        )
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}", field="embedded")
    config = EngineConfig(
        attention=attention if isinstance(attention, str) else "custom", **options
    )
    directory = materialize_gguf() if path is None else Path(path)
    checkpoint = load_checkpoint(directory, num_layers=layers)
    if path is None:
        name = name or (DEFAULT_MODEL if layers is None else f"{DEFAULT_MODEL}-first{layers}")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeUnavailable(
            "device cuda requested but CUDA is not available", runtime="orchestrator.embedded"
        )
    model_config = checkpoint.config
    model = CausalLM(model_config)
    model.load_hf_state(checkpoint.tensors)
    model = model.to(device=device, dtype=config.torch_dtype).eval()
    num_blocks = config.num_blocks(model_config)
    cache = KVCache(
        model_config.num_layers,
        num_blocks,
        config.block_size,
        model_config.num_kv_heads,
        model_config.head_dim,
        dtype=config.torch_dtype,
        device=device,
    )
    rope = Rope(model_config.head_dim, model_config.rope_theta, device)
    backend = _backend(attention)(cache, rope, model_config.num_heads)
    segment = SegmentBackend(cache, rope, model_config.num_heads)
    runner = ModelRunner(model, cache, rope, backend, segment)
    blocks = BlockManager(num_blocks, config.block_size)
    scheduler = Scheduler(
        blocks,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
    )
    max_context = min(config.max_context or model_config.max_position, model_config.max_position)
    components = Components(
        model_config=model_config,
        engine_config=config,
        tokenizer=ChatTokenizer(checkpoint.directory),
        engine=Engine(runner, blocks, scheduler),
        max_context=max_context,
        directory=checkpoint.directory,
    )
    return components, name or directory.name
