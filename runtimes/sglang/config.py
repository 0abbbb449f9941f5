"""Runtime specs and options: ``sglang:URL[,URL...]?key=value&...`` and ``sglang-router:URL``.

Options (query parameters of the spec; every one optional, an unknown one is an error):

- ``tokenizer``: a Hugging Face directory or ``.gguf`` file; ``server``: the server's own
  tokenizer path (``/model_info``) when it exists on this machine; default SmolLM2's GGUF.
- ``model``: the model name for traces (default: the tokenizer's name).
- ``timeout_s`` (600: a whole non-streaming generation), ``connect_timeout_s`` (10),
  ``max_attempts`` (4) and ``backoff_s`` (0.25) for connection errors and 503,
  ``max_connections`` (256 per server), ``cooldown_s`` (30: a failed server is skipped).
- ``affinity``: ``auto`` (the ``request_id`` before ``affinity_sep`` when it has one, else a
  hash of the first ``affinity_tokens`` prompt tokens), ``request`` or ``prompt``.
- ``fanout`` (true) and ``min_prefix_tokens`` (32): prefill the prefix shared by requests
  that arrive together (a batch, or a fork's concurrent calls) before sending them;
  ``fanout_window_s`` (0): how long to wait for more of them after two event-loop turns.
- ``entropy_top_k`` (20): top logprobs requested to approximate entropies.
- ``deterministic`` (false): declare ``DETERMINISTIC_SAMPLING``; only true when the server
  runs with ``--enable-deterministic-inference`` (then ``sampling_seed`` fixes the tokens).
- ``grammar`` (true): declare ``GRAMMAR`` (false when the server has ``--grammar-backend none``).
- ``sampling_defaults``: ``explicit`` (default) sends temperature, top_p, top_k, min_p and
  repetition_penalty in every request, so the model's ``generation_config.json`` (which
  SGLang applies to omitted keys) cannot change them; ``server`` sends only non-defaults.
- ``cost_per_token`` (1.0), ``abort_timeout_s`` (5).

Example: ``--runtime big=sglang:http://gpu1:30000,http://gpu2:30000?tokenizer=/models/smol``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import ConfigError

__all__ = ["SGLangConfig", "parse_config", "parse_urls"]


class SGLangConfig(BaseModel):
    """The SGLang runtime's options (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenizer: str | None = None
    model: str | None = None
    timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(4, ge=1)
    backoff_s: float = Field(0.25, ge=0)
    max_connections: int = Field(256, ge=1)
    cooldown_s: float = Field(30.0, ge=0)
    affinity: Literal["auto", "request", "prompt"] = "auto"
    affinity_sep: str = Field("/", min_length=1)
    affinity_tokens: int = Field(64, ge=1)
    fanout: bool = True
    min_prefix_tokens: int = Field(32, ge=1)
    fanout_window_s: float = Field(0.0, ge=0)
    entropy_top_k: int = Field(20, ge=1)
    deterministic: bool = False
    grammar: bool = True
    sampling_defaults: Literal["explicit", "server"] = "explicit"
    cost_per_token: float = Field(1.0, ge=0)
    abort_timeout_s: float = Field(5.0, gt=0)


def parse_config(options: Mapping[str, str]) -> SGLangConfig:
    """Validate spec options (strings) into a config.

    :raises ConfigError: naming the first bad or unknown option.
    """
    try:
        return SGLangConfig.model_validate(dict(options))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"{error['msg']} (got {error.get('input')!r})", field=field) from exc


def parse_urls(target: str, *, single: bool = False) -> list[str]:
    """The server URLs of a spec target ``http://h:p[,http://h2:p2]``.

    :param single: exactly one URL is allowed (an SGLang router).
    :raises ConfigError: for an empty list, a URL without scheme or host, or a duplicate.
    """
    urls = [u.strip().rstrip("/") for u in target.split(",") if u.strip()]
    if not urls:
        raise ConfigError("needs at least one server URL (http://host:port)", field="target")
    if single and len(urls) > 1:
        raise ConfigError(f"a router is one URL, got {len(urls)}: {urls}", field="target")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{url!r} is not an http(s)://host:port URL", field="target")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"duplicate server URL in {urls}", field="target")
    return urls
