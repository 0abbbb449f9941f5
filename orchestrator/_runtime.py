"""The runtime protocol: what every runtime does, and what some runtimes can also do.

Every runtime implements :class:`Runtime` (``generate``, ``stream``, ``score``, ``tokenize``,
``detokenize``, ``aclose``) and declares its :class:`Capability` flags. Optional operations
(sequence handles, KV range drops, shared segments) are methods that exist only on runtimes
declaring the flag; graphs check ``runtime.capabilities`` and take a documented fallback
otherwise. The embedded runtime and the SGLang runtime are the two implementations; the
protocol exists because there are two.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Capability",
    "ChatMessage",
    "Completion",
    "FinishReason",
    "GenerateRequest",
    "GenerateResult",
    "GenerationChunk",
    "Grammar",
    "Prompt",
    "Runtime",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
    "SegmentSpec",
    "SequenceHandle",
    "SupportsSegments",
    "SupportsSequences",
    "Usage",
]


class Capability(enum.Flag):
    """What a runtime can do beyond generate/score. Query with ``Capability.X in rt.capabilities``.

    Each flag is a guarantee:

    - ``PREFIX_SHARING``: requests with a common token prefix reuse its computed KV.
    - ``SEQUENCE_HANDLES``: ``open_sequence`` returns a :class:`SequenceHandle` whose KV stays
      resident between calls; ``fork`` shares the prefix without recomputing it.
    - ``KV_RANGE_DROP``: ``SequenceHandle.drop_range`` deletes a token range and re-encodes
      only what follows, at compacted positions.
    - ``SHARED_SEGMENTS``: ``Runtime.view`` builds a sequence out of other sequences' KV
      segments, each at its own position offset, that keep growing while it reads them.
    - ``EXACT_ENTROPY``: ``Completion.entropies`` are computed over the full vocabulary
      (without it, entropies are approximations from top-k logprobs, or absent).
    - ``GRAMMAR``: ``SamplingParams.grammar`` constrains decoding.
    - ``TOKEN_INJECTION``: ``SequenceHandle.extend`` adds forced tokens mid-generation.
    - ``DETERMINISTIC_SAMPLING``: the same request with the same ``seed`` gives the same tokens.
    - ``STREAMING``: ``stream`` yields tokens as they are produced (otherwise one final chunk).
    """

    NONE = 0
    PREFIX_SHARING = enum.auto()
    SEQUENCE_HANDLES = enum.auto()
    KV_RANGE_DROP = enum.auto()
    SHARED_SEGMENTS = enum.auto()
    EXACT_ENTROPY = enum.auto()
    GRAMMAR = enum.auto()
    TOKEN_INJECTION = enum.auto()
    DETERMINISTIC_SAMPLING = enum.auto()
    STREAMING = enum.auto()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class Prompt(_Strict):
    """Exactly one of ``text``, ``messages`` (rendered with the model's chat template) or
    ``token_ids``. Text is tokenized with special-token parsing off: user text never becomes
    a control token."""

    text: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    token_ids: tuple[int, ...] | None = None
    #: For ``messages``: open an assistant turn after them (the usual case).
    add_generation_prompt: bool = True
    #: Text forced at the start of the assistant turn (after the template), e.g. a mode token.
    assistant_prefix: str = ""

    @model_validator(mode="after")
    def _exactly_one(self) -> Prompt:
        given = [f for f in ("text", "messages", "token_ids") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a prompt needs exactly one of text, messages, token_ids (got {given or 'none'})"
            )
        return self

    @classmethod
    def of(cls, value: str | Sequence[int] | Sequence[ChatMessage] | Prompt) -> Prompt:
        """Coerce a string, a token-id list or a message list into a prompt."""
        if isinstance(value, Prompt):
            return value
        if isinstance(value, str):
            return cls(text=value)
        items = list(value)
        if items and all(isinstance(i, ChatMessage) for i in items):
            return cls(messages=tuple(items))
        return cls(token_ids=tuple(items))


class Grammar(_Strict):
    """A decoding constraint: exactly one of a JSON schema, a regex or an EBNF grammar."""

    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    ebnf: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Grammar:
        given = [f for f in ("json_schema", "regex", "ebnf") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"a grammar needs exactly one of json_schema, regex, ebnf ({given})")
        return self


class SamplingParams(_Strict):
    """How to sample. ``temperature=0`` is greedy. ``seed`` makes sampling reproducible on
    runtimes with ``DETERMINISTIC_SAMPLING`` (per request: independent of batch mates)."""

    max_new_tokens: int = Field(128, ge=0)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, description="-1 disables top-k")
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(1, ge=1)
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    #: Keep the matched ``stop`` string or ``stop_token_ids`` token at the end of the output
    #: text and ids. EOS is never kept (unless it is listed in ``stop_token_ids``); it is
    #: reported in ``Completion.matched_stop`` either way.
    include_stop: bool = False
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0)
    #: Next-token entropy of the distribution each generated token was drawn from.
    return_entropy: bool = False
    grammar: Grammar | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, value: object) -> object:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
            raise ValueError(f"stop must be a string or a list of strings, got {value!r}")
        return tuple(value)

    @field_validator("stop_token_ids", mode="before")
    @classmethod
    def _stop_ids(cls, value: object) -> object:
        if not isinstance(value, list | tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in value
        ):
            raise ValueError(f"stop_token_ids must be a list of integers, got {value!r}")
        return tuple(value)


class GenerateRequest(_Strict):
    prompt: Prompt
    sampling: SamplingParams = SamplingParams()
    #: Caller's id, echoed in results and used for aborts and prefix affinity.
    request_id: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _coerce_prompt(cls, value: object) -> object:
        if isinstance(value, str | list | tuple):
            return Prompt.of(value)
        return value


FinishReason = Literal["stop", "length", "abort"]


class Usage(BaseModel):
    """Token counts. ``cached_tokens`` is the part of ``prompt_tokens`` served from cache.
    Frozen: add usages with ``+``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            generated_tokens=self.generated_tokens + other.generated_tokens,
        )


class Completion(BaseModel):
    """One sample. ``matched_stop`` is the stop string or token id that ended it, or None
    (EOS ends with ``finish_reason="stop"`` and ``matched_stop`` = the EOS id)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    matched_stop: str | int | None = None
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    entropies: list[float] | None = None


class GenerateResult(BaseModel):
    """The answer to one :class:`GenerateRequest`: ``n`` completions and the usage."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = None
    completions: list[Completion]
    usage: Usage
    #: Runtime-specific facts worth recording (server used, fallbacks taken).
    meta: dict[str, Any] = Field(default_factory=dict)


class GenerationChunk(BaseModel):
    """A streamed piece of sample ``index``: new token ids and their text. The last chunk
    of each sample carries ``completion`` (the whole sample) and the request's ``usage``."""

    model_config = ConfigDict(extra="forbid")

    index: int = 0
    token_ids: list[int]
    text: str
    completion: Completion | None = None
    usage: Usage | None = None


class ScoreRequest(_Strict):
    """Log-probability of each continuation after the prompt (teacher forcing)."""

    prompt: Prompt
    continuations: tuple[str, ...] | tuple[tuple[int, ...], ...]

    @field_validator("prompt", mode="before")
    @classmethod
    def _coerce_prompt(cls, value: object) -> object:
        if isinstance(value, str | list | tuple):
            return Prompt.of(value)
        return value


class ScoreResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Sum of token logprobs per continuation.
    logprobs: list[float]
    #: Per-token logprobs per continuation.
    token_logprobs: list[list[float]]
    usage: Usage = Usage()


class SequenceHandle(Protocol):
    """A live sequence whose KV stays resident (``Capability.SEQUENCE_HANDLES``).

    A handle owns references to KV blocks until :meth:`release`; every exit path of a graph
    must release its handles (shielded from cancellation).
    """

    @property
    def token_ids(self) -> list[int]:
        """Every token of the sequence, in order (prompt, forced and generated)."""
        ...

    async def generate(self, sampling: SamplingParams) -> Completion:
        """Continue the sequence; generated tokens are appended to it (``n`` must be 1)."""
        ...

    async def extend(self, token_ids: Sequence[int]) -> None:
        """Append forced tokens and compute their KV (``Capability.TOKEN_INJECTION``)."""
        ...

    async def fork(self, n: int) -> list[SequenceHandle]:
        """``n`` new handles sharing this one's KV; at most the partial last block is copied."""
        ...

    async def drop_range(self, start: int, end: int) -> None:
        """Delete tokens ``[start, end)``; re-encode only the tokens after ``end`` at
        compacted positions (``Capability.KV_RANGE_DROP``)."""
        ...

    async def relink(self, segments: Sequence[SegmentSpec]) -> None:
        """Views only (``Capability.SHARED_SEGMENTS``): replace the segments this view reads
        before its own tokens. Its own tokens and their KV stay as they are; no KV is copied
        or recomputed, so views can come to read each other (Hogwild! workers)."""
        ...

    async def release(self) -> None:
        """Give back every KV block this handle holds. Idempotent."""
        ...


class SegmentSpec(BaseModel):
    """One piece of a :meth:`Runtime.view`: tokens ``[start, end)`` of ``handle`` placed at
    position ``position_offset`` of the view (``end=None``: up to the handle's current end,
    growing as the handle grows). When ``handle`` is itself a view, the range indexes its
    *own* tokens (those extended or generated on it), not the segments it reads."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    handle: Any
    start: int = 0
    end: int | None = None
    position_offset: int | None = None


@runtime_checkable
class Runtime(Protocol):
    """Where tokens come from.

    :ivar provider: ``gen_ai.provider.name`` for traces (``orchestrator.embedded``, ``sglang``).
    :ivar model: the model name (``gen_ai.request.model``).
    :ivar capabilities: what the optional operations guarantee; see :class:`Capability`.
    :ivar cost_per_token: relative cost of one generated token, for budget-aware routing.
    :ivar eos_token_ids: the model's end-of-sequence ids.
    """

    provider: str
    model: str
    capabilities: Capability
    cost_per_token: float

    @property
    def eos_token_ids(self) -> tuple[int, ...]: ...

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Serve a batch of requests concurrently; results in request order.

        :raises RequestRejected: if a request is invalid for this runtime.
        :raises ContextOverflow: if a prompt exceeds the context.
        :raises RuntimeUnavailable: if the runtime is down.
        """
        ...

    def stream(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        """Yield chunks as tokens are produced. Closing the iterator aborts the request."""
        ...

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probabilities of given continuations, batched."""
        ...

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with special-token parsing off."""
        ...

    async def detokenize(self, token_ids: Sequence[int]) -> str: ...

    async def render(self, prompt: Prompt) -> list[int]:
        """The token ids a prompt becomes: chat template applied, user text as data."""
        ...

    async def aclose(self) -> None:
        """Release every resource (threads, connections, KV). Idempotent."""
        ...


@runtime_checkable
class SupportsSequences(Protocol):
    """A runtime with ``Capability.SEQUENCE_HANDLES``."""

    async def open_sequence(self, prompt: Prompt) -> SequenceHandle:
        """Prefill ``prompt`` (reusing cached prefixes) and return a live handle on it."""
        ...


@runtime_checkable
class SupportsSegments(Protocol):
    """A runtime with ``Capability.SHARED_SEGMENTS``."""

    async def view(self, segments: Sequence[SegmentSpec]) -> SequenceHandle:
        """A sequence made of other sequences' KV segments; copies no KV. Tokens generated
        on the view are its own (a new segment after the last one)."""
        ...
