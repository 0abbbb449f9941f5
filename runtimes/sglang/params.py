"""What a ``/generate`` body may contain, checked here before it reaches the server.

SGLang 0.5.17 answers an unknown ``sampling_params`` key with a bare ``500 Internal Server
Error`` that names nothing (recorded: ``error_unknown_sampling_param``), and it accepts a body
with both ``text`` and ``input_ids`` (``error_text_and_ids``). So the client validates every
body against the keys and ranges of SGLang's own ``SamplingParams.verify`` and rejects a
mistyped key or a bad value with :class:`~orchestrator.RequestRejected` naming the field,
before any request is sent.

:func:`sampling_to_sglang` maps the core's :class:`~orchestrator.SamplingParams` to SGLang's
keys, stating the sampling knobs explicitly by default (see its ``explicit`` parameter).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator import RequestRejected, SamplingParams

__all__ = ["GENERATE_KEYS", "SGLangSampling", "sampling_to_sglang", "validate_generate_body"]

#: SGLang's own defaults (``SamplingParams`` in ``sglang/srt/sampling/sampling_params.py``).
_SGLANG_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": -1,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
}

#: Top-level ``/generate`` keys this client sends or lets callers send.
GENERATE_KEYS = frozenset(
    {
        "text",
        "input_ids",
        "sampling_params",
        "rid",
        "stream",
        "return_logprob",
        "logprob_start_len",
        "top_logprobs_num",
        "token_ids_logprob",
        "return_text_in_logprobs",
        "session_params",
        "lora_path",
        "priority",
        "log_metrics",
        "return_hidden_states",
        "custom_logit_processor",
        "data_parallel_rank",
    }
)


class SGLangSampling(BaseModel):
    """SGLang 0.5.17's ``sampling_params``: its keys, and the ranges its ``verify`` enforces.

    Strict: a string is not a number and a bool is not an int, as in SGLang's msgspec model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_new_tokens: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    stop_regex: str | list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = None
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    min_new_tokens: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1)
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    no_stop_trim: bool | None = None
    custom_params: dict[str, Any] | None = None
    stream_interval: int | None = Field(None, ge=1)
    logit_bias: dict[str, float] | None = None
    sampling_seed: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SGLangSampling:
        if self.top_k is not None and self.top_k != -1 and self.top_k < 1:
            raise ValueError(f"top_k must be -1 (disable) or at least 1, got {self.top_k}")
        grammars = [g for g in ("json_schema", "regex", "ebnf") if getattr(self, g) is not None]
        if len(grammars) > 1:
            raise ValueError(f"only one of json_schema, regex, ebnf can be set (got {grammars})")
        if (
            self.min_new_tokens is not None
            and self.max_new_tokens is not None
            and self.min_new_tokens > self.max_new_tokens
        ):
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) exceeds "
                f"max_new_tokens ({self.max_new_tokens})"
            )
        if self.json_schema is not None:
            try:
                json.loads(self.json_schema)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json_schema is not valid JSON: {exc}") from None
        return self


def sampling_to_sglang(
    params: SamplingParams, *, explicit: bool = True, seed: int | None = None
) -> dict[str, Any]:
    """SGLang ``sampling_params`` for the core's sampling parameters.

    ``logprobs``, ``top_logprobs`` and ``return_entropy`` are request-level in SGLang; the
    caller adds them to the body. ``include_stop`` becomes ``no_stop_trim``; ``n`` is sent
    as is (SGLang then prefills the prompt once and forks it).

    :param explicit: send ``temperature``, ``top_p``, ``top_k``, ``min_p`` and
        ``repetition_penalty`` even at their defaults. Under 0.5.17's default
        ``--sampling-defaults model``, an omitted key takes the value of the model's
        ``generation_config.json``, which may differ from ours. False sends them only when
        they differ from SGLang's built-in defaults (smaller bodies; the form of the
        recorded requests, made on a model without a generation config).
    :param seed: overrides ``params.seed``.
    """
    out: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
    tuning: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repetition_penalty": 1.0,
    }
    for key, value in tuning.items():
        if explicit or value != _SGLANG_DEFAULTS[key]:
            out[key] = value
    if params.n != 1:
        out["n"] = params.n
    seed = params.seed if seed is None else seed
    if seed is not None:
        out["sampling_seed"] = seed
    if params.stop:
        out["stop"] = list(params.stop)
    if params.stop_token_ids:
        out["stop_token_ids"] = list(params.stop_token_ids)
    if params.ignore_eos:
        out["ignore_eos"] = True
    if params.include_stop:
        out["no_stop_trim"] = True
    grammar = params.grammar
    if grammar is not None:
        if grammar.json_schema is not None:
            out["json_schema"] = json.dumps(grammar.json_schema)
        elif grammar.regex is not None:
            out["regex"] = grammar.regex
        else:
            out["ebnf"] = grammar.ebnf
    return out


def validate_generate_body(body: Mapping[str, Any], *, runtime: str) -> None:
    """Check a ``/generate`` body as SGLang would, but with messages that name the field.

    :raises RequestRejected: (``status=None``: never sent) on an unknown key, a bad value, or
        not exactly one of ``text`` and ``input_ids``.
    """
    unknown = sorted(set(body) - GENERATE_KEYS)
    if unknown:
        raise RequestRejected(
            f"unknown /generate key(s) {unknown}; known: {sorted(GENERATE_KEYS)}",
            runtime=runtime,
            request=dict(body),
        )
    given = [k for k in ("text", "input_ids") if body.get(k) is not None]
    if len(given) != 1:
        raise RequestRejected(
            f"a /generate body needs exactly one of text, input_ids (got {given or 'none'}); "
            "SGLang 0.5.17 would silently use one of them",
            runtime=runtime,
            request=dict(body),
        )
    sampling = body.get("sampling_params", {})
    for item in sampling if isinstance(sampling, list) else [sampling]:
        try:
            SGLangSampling.model_validate(item)
        except ValidationError as exc:
            raise RequestRejected(
                f"invalid sampling_params: {_describe(exc)}", runtime=runtime, request=dict(body)
            ) from exc


def _describe(exc: ValidationError) -> str:
    """One line per problem, ``field: message``, without pydantic's URLs."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "sampling_params"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
