"""A scripted, model-free runtime: exact answers for tests, negligible cost for benchmarks.

Graph and plugin logic (search strategies, TIM, ThreadWeaver, Hogwild!, routers, scorers) is
tested *exactly* against :class:`ScriptedRuntime`, and the executor benchmark uses it so that
what it measures is the executor, not a model. It implements the whole
:class:`~orchestrator.Runtime` protocol and every optional capability, in memory.

Tokens
------
One character is one token: ``id = ord(char) + 256``, so ``tokenize`` and ``detokenize`` are
exact inverses. Ids 0-255 are special tokens, declared by ``special_tokens`` (merged into
:data:`DEFAULT_SPECIAL_TOKENS`: ``<|endoftext|>`` 0, ``<|im_start|>`` 1, ``<|im_end|>`` 2; the
EOS is ``<|im_end|>`` unless ``eos_token_ids`` says otherwise).

- ``tokenize(text)`` treats text as data: a ``<|im_end|>`` typed by a user is ten tokens.
- *Generated* text (scripted outputs, ``Prompt.assistant_prefix``, score continuations and
  ``top_logprobs`` keys) is parsed: a special-token string there is its one special id.
- ``render(prompt)``: text is tokenized as data; token ids are used as given; messages become
  ChatML, ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message (markers are special ids,
  role and content are data), then ``<|im_start|>assistant\\n`` if ``add_generation_prompt``.
  ``assistant_prefix`` is appended to every kind of prompt.

Rules match the *rendered prompt text* (``detokenize(render(prompt))``): for a text prompt it
is the text itself; for messages it shows the ChatML markers.

Script
------
A :class:`Script` (from a dict, from JSON with ``Script.model_validate_json``, or from a JSON
file with :meth:`Script.from_file`)::

    {
      "rules": [
        {"endswith": "What is 12 + 7?", "outputs": ["9", "19"], "then": "cycle"},
        {"contains": "Is it right?",
         "outputs": [{"text": "no", "logprobs": [-0.5, -0.25], "entropy": 1.5}],
         "scores": {"yes": -2.0, "no": [-0.1, -0.2]}},
        {"regex": "^slow", "delay": 5.0, "token_delay": 0.5, "outputs": ["late"]},
        {"exact": "crash", "raise_error": "server fell over", "raise_as": "RuntimeUnavailable"}
      ],
      "default": {"outputs": [""]}
    }

Rules are tried in order and the first match wins; a rule's matchers (``exact``, ``endswith``,
``contains``, ``regex`` with :func:`re.search`) must all hold, and it needs at least one. When
no rule matches, ``default`` answers (a rule without matchers); without one, the runtime's
``responder`` answers (see :class:`ScriptedRuntime`); without either the call raises
:class:`~orchestrator.RequestRejected` naming the prompt. Score requests use the first matching
rule (or default) that has ``scores``.

A rule (and ``default``) gives:

- ``outputs``: a list of strings or output objects (below).
- ``pick``: which output each sample gets. ``"turn"`` (default): every sample takes the next
  output, counted over all the calls this rule answered. ``"sample"``: sample ``i`` of a call
  gets output ``i``. ``"seed"``: sample ``i`` gets output
  ``random.Random(seed * 1_000_003 + i).randrange(len(outputs))``; without a seed, ``seed`` is
  the number of samples the rule answered before, so unseeded calls vary reproducibly.
- ``then``: past the last output, ``"repeat_last"`` (default), ``"cycle"`` or ``"error"``
  (:class:`~orchestrator.RequestRejected`).
- ``scores``: continuation text → total log-probability (split evenly over its tokens) or a
  list of per-token log-probabilities. A continuation not listed, or with no rule matching, gets
  ``default_logprob`` (-1.0) per token.
- Faults: ``delay`` (seconds before the first token), ``token_delay`` (seconds per generated
  token), ``raise_error`` (a message: the call fails after its delay) and ``raise_as``
  (``"RuntimeFailure"``, ``"RuntimeUnavailable"`` or ``"RequestRejected"``). Waits use
  :func:`anyio.sleep`, so cancellation and ``fail_after`` cut a call short.

An output object has ``text`` and optionally ``logprobs`` (one per token of ``text``),
``entropy`` (a number: the first token's; a list: one per token), ``top_logprobs`` (one
``{token text: logprob}`` per token) and its own ``delay``, ``token_delay``, ``raise_error``,
``raise_as``; those left out inherit the rule's, so ``outputs: [{"raise_error": "boom"}, "ok"]``
fails once and then answers. Tokens without scripted values get logprob ``default_logprob``,
entropy 0.0 and ``top_logprobs`` ``{token: its logprob}``.

Decoding
--------
The scripted text, followed by an EOS token (the model "ends"), is decoded like model output:

- ``max_new_tokens`` truncates (``finish_reason="length"``); the implicit EOS is a generated
  token too, so ``"abc"`` with ``max_new_tokens=3`` finishes with ``"length"``.
- The first ``stop_token_ids`` or EOS token, or the first completed ``stop`` string (earliest
  completing token, then earliest start; a tie with a stop token goes to the token), ends it
  with ``"stop"`` and ``matched_stop`` set; ``include_stop`` keeps a stop string or a
  ``stop_token_ids`` token in text and ids. An EOS that is not in ``stop_token_ids`` is never
  kept, so text and ids always agree and the EOS never leaks into the answer.
- ``ignore_eos``: EOS no longer stops, and past the script the model repeats EOS until
  ``max_new_tokens``.
- ``Usage.generated_tokens`` counts every token produced, including a stop that is trimmed.
- ``grammar`` is accepted (recorded in ``calls``) but not enforced: the script is the model.

Usage and the prefix cache
--------------------------
With ``Capability.PREFIX_SHARING`` the runtime keeps every prompt it saw, and every prompt plus
completion, and reports as ``cached_tokens`` the longest common prefix with any of them (capped
at the prompt length minus one, as a radix cache must compute the last token). Without it,
``cached_tokens`` is 0.

Sequences
---------
``open_sequence`` prefills a prompt into a :class:`ScriptedSequence`; its ``generate`` matches
rules against the handle's whole text so far and appends the completion's tokens; ``extend``,
``fork``, ``drop_range`` and ``release`` work on an in-memory token list. ``view`` builds a
sequence out of other handles' token ranges (``end=None`` follows the source as it grows);
``position_offset`` is kept but has no effect on text. A segment over a view reads the view's
own tokens (those extended or generated on it); ``relink`` replaces a view's segments. A view can
drop only its own tokens.
Everything is counted in :attr:`ScriptedRuntime.stats` and every prompt-bearing call is
recorded in :attr:`ScriptedRuntime.calls`.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import anyio
from anyio.lowlevel import checkpoint
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._exceptions import (
    CapabilityMissing,
    ConfigError,
    RequestRejected,
    RuntimeFailure,
    RuntimeUnavailable,
)
from ._runtime import (
    Capability,
    Completion,
    FinishReason,
    GenerateRequest,
    GenerateResult,
    GenerationChunk,
    Prompt,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    SegmentSpec,
    SequenceHandle,
    Usage,
)

__all__ = [
    "ALL_CAPABILITIES",
    "CHAR_TOKEN_OFFSET",
    "DEFAULT_SPECIAL_TOKENS",
    "Script",
    "ScriptReply",
    "ScriptRule",
    "ScriptedCall",
    "ScriptedOutput",
    "ScriptedRuntime",
    "ScriptedSequence",
    "ScriptedStats",
]

#: Character ``c`` is token ``ord(c) + CHAR_TOKEN_OFFSET``; ids below it are special tokens.
CHAR_TOKEN_OFFSET = 256
DEFAULT_SPECIAL_TOKENS: Mapping[str, int] = MappingProxyType(
    {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
)
ALL_CAPABILITIES = ~Capability.NONE
_SEED_STRIDE = 1_000_003
_MAX_SHOWN_CHARS = 80

RaiseAs = Literal["RuntimeFailure", "RuntimeUnavailable", "RequestRejected"]
CallKind = Literal["generate", "stream", "score", "open", "sequence"]
_FAULTS: Mapping[str, type[RuntimeFailure]] = MappingProxyType(
    {
        "RuntimeFailure": RuntimeFailure,
        "RuntimeUnavailable": RuntimeUnavailable,
        "RequestRejected": RequestRejected,
    }
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptedOutput(_Model):
    """One scripted sample. Fault fields left at None inherit the rule's (see the module doc)."""

    text: str = ""
    logprobs: tuple[float, ...] | None = None
    entropy: float | tuple[float, ...] | None = None
    top_logprobs: tuple[dict[str, float], ...] | None = None
    delay: float | None = Field(default=None, ge=0)
    token_delay: float | None = Field(default=None, ge=0)
    raise_error: str | None = None
    raise_as: RaiseAs | None = None


#: ``responder(prompt_text, sampling, sample_index)``: one sample's text or output.
Responder = Callable[[str, SamplingParams, int], str | ScriptedOutput]


class ScriptReply(_Model):
    """What a rule answers; also the script's ``default`` (a rule without matchers)."""

    outputs: tuple[ScriptedOutput, ...] = ()
    pick: Literal["turn", "sample", "seed"] = "turn"
    then: Literal["repeat_last", "cycle", "error"] = "repeat_last"
    scores: dict[str, float | tuple[float, ...]] = Field(default_factory=dict)
    delay: float = Field(default=0.0, ge=0)
    token_delay: float = Field(default=0.0, ge=0)
    raise_error: str | None = None
    raise_as: RaiseAs = "RuntimeFailure"

    @field_validator("outputs", mode="before")
    @classmethod
    def _strings_are_texts(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple({"text": v} if isinstance(v, str) else v for v in value)
        return value


class ScriptRule(ScriptReply):
    """A reply for prompts whose rendered text satisfies every matcher given."""

    exact: str | None = None
    endswith: str | None = None
    contains: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _has_matcher(self) -> ScriptRule:
        if (self.exact, self.endswith, self.contains, self.regex) == (None, None, None, None):
            raise ValueError(
                "a rule needs at least one of exact, endswith, contains, regex "
                "(a catch-all belongs in the script's default)"
            )
        return self


class Script(_Model):
    """Rules tried in order, then ``default``. The format is documented in the module doc."""

    rules: tuple[ScriptRule, ...] = ()
    default: ScriptReply | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        """Load a JSON script file.

        :raises ConfigError: if the file is not a valid script (the message names the path).
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {exc}", field="script") from exc


class ScriptedCall(NamedTuple):
    """One recorded call: ``sampling`` is None for ``score`` and ``open``."""

    kind: CallKind
    prompt_text: str
    sampling: SamplingParams | None


@dataclasses.dataclass(slots=True)
class ScriptedStats:
    """Counters over the runtime's life, so tests can assert e.g. "no re-prefill" and "every
    handle released". Copy with ``dataclasses.replace(rt.stats)`` to compare before/after."""

    num_calls: int = 0  #: entries appended to ``calls``
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    #: Tokens computed to fill KV: uncached prompt tokens, opened and extended tokens.
    num_prefill_tokens: int = 0
    num_generated_tokens: int = 0
    num_handles_opened: int = 0  #: opened, forked and view handles
    num_live_handles: int = 0
    num_forks: int = 0  #: ``fork`` calls
    num_drops: int = 0
    num_reencoded_tokens: int = 0  #: tokens after each dropped range
    num_views: int = 0
    num_relinks: int = 0  #: ``relink`` calls on views
    num_aborts: int = 0  #: calls cancelled or streams closed before their end
    num_errors: int = 0  #: scripted faults raised


class _Output(NamedTuple):
    ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None
    entropies: tuple[float, ...]
    top_logprobs: tuple[dict[int, float], ...] | None
    delay: float
    token_delay: float
    fault: tuple[RaiseAs, str] | None


class _Reply(NamedTuple):
    label: str
    key: int
    outputs: tuple[_Output, ...]
    pick: str
    then: str
    scores: Mapping[str, float | tuple[float, ...]]
    delay: float
    fault: tuple[RaiseAs, str] | None


class _Rule(NamedTuple):
    exact: str | None
    endswith: str | None
    contains: str | None
    regex: re.Pattern[str] | None
    reply: _Reply

    def matches(self, text: str) -> bool:
        return (
            (self.exact is None or text == self.exact)
            and (self.endswith is None or text.endswith(self.endswith))
            and (self.contains is None or self.contains in text)
            and (self.regex is None or self.regex.search(text) is not None)
        )


class _Answer(NamedTuple):
    call: ScriptedCall
    label: str
    prompt_ids: tuple[int, ...]
    num_cached: int
    samples: list[tuple[Completion, int]]  # (completion, tokens produced)
    delay: float
    token_delay: float
    fault: RuntimeFailure | None

    @property
    def num_generated(self) -> int:
        return sum(produced for _, produced in self.samples)

    @property
    def seconds(self) -> float:
        longest = max((produced for _, produced in self.samples), default=0)
        return self.delay + self.token_delay * longest

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=len(self.prompt_ids),
            cached_tokens=self.num_cached,
            generated_tokens=self.num_generated,
        )


def _shorten(text: str) -> str:
    if len(text) <= _MAX_SHOWN_CHARS:
        return text
    half = (_MAX_SHOWN_CHARS - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    # Bisect on slice equality: C-speed comparisons instead of a Python loop per token.
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while high - low > 1:  # invariant: a[:low] == b[:low] and a[:high] != b[:high]
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


def _check_special_tokens(extra: Mapping[str, int] | None) -> dict[str, int]:
    table = {**DEFAULT_SPECIAL_TOKENS, **(extra or {})}
    by_id: dict[int, str] = {}
    for text, token in table.items():
        if not text:
            raise ConfigError("a special token needs a non-empty string", field="special_tokens")
        if not 0 <= token < CHAR_TOKEN_OFFSET:
            raise ConfigError(
                f"{text!r} has id {token}; special ids are 0-255 (ids from 256 are characters)",
                field="special_tokens",
            )
        if token in by_id:
            raise ConfigError(
                f"{by_id[token]!r} and {text!r} share id {token}", field="special_tokens"
            )
        by_id[token] = text
    return table


class ScriptedRuntime:
    """A :class:`~orchestrator.Runtime` that answers from a :class:`Script`, in memory, with
    every optional capability (see the module documentation for the script format).

    :param script: the rules, as a :class:`Script` or its dict form.
    :param responder: answers prompts no rule matches, per sample:
        ``responder(prompt_text, sampling, sample_index)`` returns the text or a
        :class:`ScriptedOutput`. For generative tests and benchmarks; it replaces
        ``script.default``, so giving both is an error.
    :param model: the model name reported in traces and error messages.
    :param capabilities: the flags to declare (default: all). An operation whose flag is off
        raises :class:`~orchestrator.CapabilityMissing`, so tests can simulate e.g. SGLang,
        which has no sequence handles.
    :param cost_per_token: relative cost of a generated token, for budget-aware routers.
    :param special_tokens: extra or renumbered special tokens (ids 0-255), e.g.
        ``{"</Thread>": 10}``.
    :param eos_token_ids: default: the id of ``<|im_end|>``; the first is the implicit EOS.
    :param default_logprob: the log-probability of every token the script gives none for.
    :param stream_chunk_tokens: tokens per streamed chunk.
    :raises ConfigError: if the script, the special tokens or an option is invalid.
    """

    def __init__(
        self,
        script: Script | Mapping[str, Any] | None = None,
        *,
        responder: Responder | None = None,
        model: str = "scripted",
        capabilities: Capability = ALL_CAPABILITIES,
        cost_per_token: float = 1.0,
        special_tokens: Mapping[str, int] | None = None,
        eos_token_ids: Sequence[int] | None = None,
        default_logprob: float = -1.0,
        stream_chunk_tokens: int = 1,
    ) -> None:
        if cost_per_token < 0:
            raise ConfigError(f"must be >= 0, got {cost_per_token}", field="cost_per_token")
        if stream_chunk_tokens < 1:
            raise ConfigError(
                f"must be >= 1, got {stream_chunk_tokens}", field="stream_chunk_tokens"
            )
        self.provider = "orchestrator.scripted"
        self.model = model
        self.capabilities = capabilities
        self.cost_per_token = cost_per_token
        #: Every prompt-bearing call, in order.
        self.calls: list[ScriptedCall] = []
        #: The calls cancelled, or whose stream was closed, before they finished.
        self.aborted: list[ScriptedCall] = []
        self.stats = ScriptedStats()
        self._special_ids = _check_special_tokens(special_tokens)
        self._special_texts = {token: text for text, token in self._special_ids.items()}
        by_length = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(s) for s in by_length))
        self._eos = (
            tuple(eos_token_ids)
            if eos_token_ids is not None
            else (self._special_ids["<|im_end|>"],)
        )
        if not self._eos or any(t not in self._special_texts for t in self._eos):
            raise ConfigError(
                f"must be special token ids, got {list(self._eos)}", field="eos_token_ids"
            )
        self._eos_set = frozenset(self._eos)
        self._default_logprob = default_logprob
        self._chunk_tokens = stream_chunk_tokens
        if script is None:
            script = Script()
        elif not isinstance(script, Script):
            try:
                script = Script.model_validate(script)
            except ValidationError as exc:
                raise ConfigError(str(exc), field="script") from exc
        if responder is not None and script.default is not None:
            raise ConfigError(
                "a default rule and a responder both answer unmatched prompts; give one",
                field="responder",
            )
        self.script = script
        self._responder = responder
        self._rules = [
            _Rule(
                rule.exact,
                rule.endswith,
                rule.contains,
                None if rule.regex is None else re.compile(rule.regex),
                self._compile_reply(rule, f"rules[{i}]", i),
            )
            for i, rule in enumerate(script.rules)
        ]
        self._default = (
            None
            if script.default is None
            else self._compile_reply(script.default, "default", len(script.rules))
        )
        self._num_answered = [0] * (len(script.rules) + 1)  # samples per rule, for "turn"
        self._seen: list[tuple[int, ...]] = []  # sorted: the prefix cache
        self._live: set[ScriptedSequence] = set()
        self._closed = False

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    @property
    def special_tokens(self) -> Mapping[str, int]:
        """Every special token's id, defaults included."""
        return MappingProxyType(self._special_ids)

    # -- the Runtime protocol ------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Answer each request from the script; the batch waits for its slowest request.
        ``meta["script_rule"]`` names the rule that answered (``rules[i]``, ``default``,
        ``responder``)."""
        self._check_open()
        answers = [self._answer_request(request, "generate") for request in requests]
        await self._wait(max((a.seconds for a in answers), default=0.0), [a.call for a in answers])
        for answer in answers:
            self._raise_fault(answer)
        results = []
        for request, answer in zip(requests, answers, strict=True):
            self._settle(answer)
            results.append(
                GenerateResult(
                    request_id=request.request_id,
                    completions=[completion for completion, _ in answer.samples],
                    usage=answer.usage(),
                    meta={"script_rule": answer.label},
                )
            )
        return results

    async def stream(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        """Yield ``stream_chunk_tokens`` tokens per chunk (everything in one chunk per sample
        without ``Capability.STREAMING``), samples one after another. Closing the iterator or
        cancelling it early records an abort and counts the tokens sent so far."""
        self._check_open()
        answer = self._answer_request(request, "stream")
        chunked = Capability.STREAMING in self.capabilities
        num_sent = 0
        done = False
        try:
            await self._sleep(answer.delay)
            if answer.fault is not None:
                done = True
                self._raise_fault(answer)
            usage = answer.usage()
            for index, (completion, _) in enumerate(answer.samples):
                for chunk in self._chunks(index, completion, usage, chunked):
                    await self._sleep(answer.token_delay * len(chunk.token_ids))
                    num_sent += len(chunk.token_ids)
                    yield chunk
            done = True
            self._settle(answer)
        finally:
            if not done:  # closed or cancelled: no awaiting here
                self._abort([answer.call])
                self.stats.num_generated_tokens += num_sent

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probabilities from the first matching rule with ``scores``, else
        ``default_logprob`` per token. Teacher forcing prefills prompt and continuation, so
        ``prompt_tokens`` counts both."""
        self._check_open()
        results, calls = [], []
        delay, fault = 0.0, None
        for request in requests:
            ids, text = self._render(request.prompt)
            calls.append(self._record("score", text, None))
            reply = self._match(text, scoring=True)
            scored = [self._score_one(c, reply) for c in request.continuations]
            num_cached = self._prefix_hit(tuple(ids), cap=True)
            num_prompt = len(ids) + sum(len(per_token) for _, per_token in scored)
            self._count_prompt(num_prompt, num_cached)
            results.append(
                ScoreResult(
                    logprobs=[total for total, _ in scored],
                    token_logprobs=[per_token for _, per_token in scored],
                    usage=Usage(prompt_tokens=num_prompt, cached_tokens=num_cached),
                )
            )
            if reply is not None:
                delay = max(delay, reply.delay)
                if fault is None and reply.fault is not None:
                    fault = self._fault(reply.fault, request)
        await self._wait(delay, calls)
        if fault is not None:
            self.stats.num_errors += 1
            raise fault
        return results

    async def tokenize(self, text: str) -> list[int]:
        return self._tokenize(text)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._detokenize(token_ids)

    async def render(self, prompt: Prompt) -> list[int]:
        return self._render(prompt)[0]

    async def aclose(self) -> None:
        """Release every live handle and refuse later calls. Idempotent."""
        for handle in list(self._live):
            self._release(handle)
        self._closed = True

    # -- optional capabilities -----------------------------------------------------------

    async def open_sequence(self, prompt: Prompt | str | Sequence[int]) -> ScriptedSequence:
        """Prefill ``prompt`` (cached prefix reused) into a live handle.

        :raises CapabilityMissing: without ``Capability.SEQUENCE_HANDLES``.
        """
        self._check_open()
        self._require(Capability.SEQUENCE_HANDLES)
        ids, text = self._render(Prompt.of(prompt))
        await checkpoint()
        self._record("open", text, None)
        self._count_prompt(len(ids), self._prefix_hit(tuple(ids), cap=False))
        return ScriptedSequence(self, ids)

    async def view(self, segments: Sequence[SegmentSpec]) -> ScriptedSequence:
        """A handle reading other handles' token ranges; it copies and prefills nothing.

        :raises CapabilityMissing: without ``Capability.SHARED_SEGMENTS``.
        :raises RequestRejected: if a segment's handle is foreign or released, or its range
            lies outside the handle.
        """
        self._check_open()
        self._require(Capability.SHARED_SEGMENTS)
        self._check_segments(segments)
        await checkpoint()
        self.stats.num_views += 1
        return ScriptedSequence(self, [], tuple(segments), is_view=True)

    def _check_segments(self, segments: Sequence[SegmentSpec]) -> None:
        for i, segment in enumerate(segments):
            handle = segment.handle
            if not isinstance(handle, ScriptedSequence) or handle._runtime is not self:
                raise RequestRejected(
                    f"segment {i}: the handle is not a sequence of this runtime", runtime=self.model
                )
            if handle.released:
                raise RequestRejected(f"segment {i}: the handle was released", runtime=self.model)
            size = len(handle._own)
            end = size if segment.end is None else segment.end
            if not 0 <= segment.start <= end <= size:
                raise RequestRejected(
                    f"segment {i}: tokens [{segment.start}, {segment.end}) lie outside "
                    f"the handle's {size} tokens",
                    runtime=self.model,
                )

    # -- answering -----------------------------------------------------------------------

    def _answer_request(self, request: GenerateRequest, kind: CallKind) -> _Answer:
        ids, text = self._render(request.prompt)
        return self._answer(kind, ids, text, request.sampling, resident=None, request=request)

    def _answer(
        self,
        kind: CallKind,
        prompt_ids: list[int],
        text: str,
        sampling: SamplingParams,
        *,
        resident: int | None,
        request: GenerateRequest | None,
    ) -> _Answer:
        """Match, pick and decode synchronously, so that turns and the prefix cache advance
        in call order whatever the delays. ``resident``: tokens already in KV (handles)."""
        if sampling.grammar is not None:
            self._require(Capability.GRAMMAR)
        call = self._record(kind, text, sampling)
        reply = self._match(text, scoring=False)
        if reply is not None:
            label, outputs = reply.label, self._pick(reply, sampling, request)
        elif self._responder is not None:
            label = "responder"
            outputs = [
                self._responded(self._responder(text, sampling, i)) for i in range(sampling.n)
            ]
        else:
            raise RequestRejected(
                f"no script rule matches the prompt {_shorten(text)!r} "
                "(and there is no default rule or responder)",
                runtime=self.model,
                request=request,
            )
        ids = tuple(prompt_ids)
        num_cached = resident if resident is not None else self._prefix_hit(ids, cap=True)
        self._count_prompt(len(ids), num_cached)
        fault = next((o.fault for o in outputs if o.fault is not None), None)
        return _Answer(
            call,
            label,
            ids,
            num_cached,
            [] if fault else [self._decode(output, sampling) for output in outputs],
            max(o.delay for o in outputs),
            max(o.token_delay for o in outputs),
            None if fault is None else self._fault(fault, request),
        )

    def _match(self, text: str, *, scoring: bool) -> _Reply | None:
        for rule in self._rules:
            if (rule.reply.scores or not scoring) and rule.matches(text):
                return rule.reply
        if self._default is not None and (self._default.scores or not scoring):
            return self._default
        return None

    def _pick(
        self, reply: _Reply, sampling: SamplingParams, request: GenerateRequest | None
    ) -> list[_Output]:
        outputs, n = reply.outputs, sampling.n
        if not outputs:
            raise RequestRejected(
                f"script {reply.label} has no outputs", runtime=self.model, request=request
            )
        before = self._num_answered[reply.key]
        if reply.pick == "seed":
            seed = before if sampling.seed is None else sampling.seed
            picked = [
                outputs[random.Random(seed * _SEED_STRIDE + i).randrange(len(outputs))]
                for i in range(n)
            ]
        else:
            first = before if reply.pick == "turn" else 0
            picked = [self._nth(reply, first + i, request) for i in range(n)]
        self._num_answered[reply.key] = before + n
        return picked

    def _nth(self, reply: _Reply, index: int, request: GenerateRequest | None) -> _Output:
        outputs = reply.outputs
        if index < len(outputs):
            return outputs[index]
        if reply.then == "cycle":
            return outputs[index % len(outputs)]
        if reply.then == "repeat_last":
            return outputs[-1]
        raise RequestRejected(
            f"script {reply.label} has no output #{index} ({len(outputs)} scripted, then='error')",
            runtime=self.model,
            request=request,
        )

    def _decode(self, output: _Output, sampling: SamplingParams) -> tuple[Completion, int]:
        """Run the scripted tokens plus an implicit EOS through the stop rules; returns the
        completion and the number of tokens produced (trimmed stops included)."""
        max_new = sampling.max_new_tokens
        eos = self._eos[0]
        produced = list(output.ids[:max_new])
        if len(produced) < max_new:
            produced.append(eos)
            if sampling.ignore_eos:  # a model told to ignore EOS keeps emitting it
                produced.extend([eos] * (max_new - len(produced)))
        stop_ids = frozenset() if sampling.ignore_eos else self._eos_set
        if sampling.stop_token_ids:
            stop_ids = stop_ids.union(sampling.stop_token_ids)
        stop_at = next((j for j, t in enumerate(produced) if t in stop_ids), None)
        limit = len(produced) if stop_at is None else stop_at
        hit = self._find_stop_string(produced[:limit], sampling) if sampling.stop else None
        finish: FinishReason = "stop"
        matched: str | int | None
        if hit is not None:
            kept, text, num_produced, matched = hit
        elif stop_at is not None:
            # EOS is never kept (a real runtime hides it from the text); a requested stop
            # token is kept with include_stop.
            keep = sampling.include_stop and produced[stop_at] in sampling.stop_token_ids
            kept = produced[: stop_at + 1] if keep else produced[:stop_at]
            text, num_produced, matched = self._detokenize(kept), stop_at + 1, produced[stop_at]
        else:
            kept, text, num_produced, matched = produced, self._detokenize(produced), limit, None
            finish = "length"
        logprobs, top_logprobs, entropies = self._token_details(output, kept, sampling)
        completion = Completion(
            text=text,
            token_ids=kept,
            finish_reason=finish,
            matched_stop=matched,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            entropies=entropies,
        )
        return completion, num_produced

    def _find_stop_string(
        self, ids: list[int], sampling: SamplingParams
    ) -> tuple[list[int], str, int, str] | None:
        pieces = [self._token_text(t) for t in ids]
        ends = list(itertools.accumulate(map(len, pieces)))  # text offset after each token
        full = "".join(pieces)
        best: tuple[int, int, str] | None = None
        for stop in sampling.stop:
            start = full.find(stop) if stop else -1
            if start < 0:
                continue
            completing = bisect.bisect_left(ends, start + len(stop))
            if best is None or (completing, start) < best[:2]:
                best = (completing, start, stop)
        if best is None:
            return None
        completing, start, stop = best
        if sampling.include_stop:
            return ids[: completing + 1], full[: start + len(stop)], completing + 1, stop
        return ids[: bisect.bisect_right(ends, start)], full[:start], completing + 1, stop

    def _token_details(
        self, output: _Output, kept: list[int], sampling: SamplingParams
    ) -> tuple[list[float] | None, list[dict[int, float]] | None, list[float] | None]:
        num_scripted = len(output.ids)
        logprobs: list[float] = []
        if sampling.logprobs or sampling.top_logprobs:
            scripted = output.logprobs or ()
            logprobs = [
                scripted[j] if j < len(scripted) else self._default_logprob
                for j in range(len(kept))
            ]
        top: list[dict[int, float]] | None = None
        if sampling.top_logprobs:
            tables = output.top_logprobs or ()
            top = []
            for j, token in enumerate(kept):
                table = tables[j] if j < len(tables) and j < num_scripted else {token: logprobs[j]}
                ranked = sorted(table.items(), key=lambda item: (-item[1], item[0]))
                top.append(dict(ranked[: sampling.top_logprobs]))
        entropies = None
        if sampling.return_entropy:
            scripted_entropies = output.entropies
            entropies = [
                scripted_entropies[j] if j < len(scripted_entropies) else 0.0
                for j in range(len(kept))
            ]
        return (logprobs if sampling.logprobs else None), top, entropies

    def _score_one(
        self, continuation: str | tuple[int, ...], reply: _Reply | None
    ) -> tuple[float, list[float]]:
        if isinstance(continuation, str):
            ids, key = self._encode(continuation), continuation
        else:
            ids = list(continuation)
            key = self._detokenize(ids)
        scripted = None if reply is None else reply.scores.get(key)
        if scripted is None:
            per_token = [self._default_logprob] * len(ids)
            return sum(per_token), per_token
        if isinstance(scripted, tuple):
            return sum(scripted), list(scripted)
        return scripted, [scripted / len(ids)] * len(ids) if ids else []

    def _chunks(
        self, index: int, completion: Completion, usage: Usage, chunked: bool
    ) -> list[GenerationChunk]:
        ids = completion.token_ids
        size = self._chunk_tokens if chunked else max(len(ids), 1)
        groups = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
        chunks, num_chars = [], 0
        for group in groups[:-1]:
            text = self._detokenize(group)
            num_chars += len(text)
            chunks.append(GenerationChunk(index=index, token_ids=group, text=text))
        # The last chunk takes the rest of the text, so that the chunks add up to it exactly
        # even when a stop string ends inside a multi-character special token.
        chunks.append(
            GenerationChunk(
                index=index,
                token_ids=groups[-1],
                text=completion.text[num_chars:],
                completion=completion,
                usage=usage,
            )
        )
        return chunks

    # -- bookkeeping ---------------------------------------------------------------------

    def _record(self, kind: CallKind, text: str, sampling: SamplingParams | None) -> ScriptedCall:
        call = ScriptedCall(kind, text, sampling)
        self.calls.append(call)
        self.stats.num_calls += 1
        return call

    def _count_prompt(self, num_prompt: int, num_cached: int) -> None:
        stats = self.stats
        stats.num_prompt_tokens += num_prompt
        stats.num_cached_tokens += num_cached
        stats.num_prefill_tokens += num_prompt - num_cached

    def _prefix_hit(self, ids: tuple[int, ...], *, cap: bool) -> int:
        """Longest common prefix with any sequence seen before, then remember ``ids``. In a
        sorted list the best match is a neighbour of the insertion point."""
        if Capability.PREFIX_SHARING not in self.capabilities:
            return 0
        seen = self._seen
        pos = bisect.bisect_left(seen, ids)
        hit = max(
            (_common_prefix(seen[i], ids) for i in (pos - 1, pos) if 0 <= i < len(seen)),
            default=0,
        )
        if pos == len(seen) or seen[pos] != ids:
            seen.insert(pos, ids)
        return max(0, min(hit, len(ids) - 1)) if cap else hit

    def _remember(self, ids: tuple[int, ...]) -> None:
        seen = self._seen
        pos = bisect.bisect_left(seen, ids)
        if pos == len(seen) or seen[pos] != ids:
            seen.insert(pos, ids)

    def _settle(self, answer: _Answer) -> None:
        self.stats.num_generated_tokens += answer.num_generated
        if answer.call.kind != "sequence" and Capability.PREFIX_SHARING in self.capabilities:
            for completion, _ in answer.samples:
                if completion.token_ids:
                    self._remember(answer.prompt_ids + tuple(completion.token_ids))

    def _fault(self, fault: tuple[RaiseAs, str], request: object) -> RuntimeFailure:
        raise_as, message = fault
        return _FAULTS[raise_as](message, runtime=self.model, request=request)

    def _raise_fault(self, answer: _Answer) -> None:
        if answer.fault is not None:
            self.stats.num_errors += 1
            raise answer.fault

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await anyio.sleep(seconds)
        else:
            await checkpoint()  # every call is a cancellation point, as with a real runtime

    async def _wait(self, seconds: float, calls: Sequence[ScriptedCall]) -> None:
        try:
            await self._sleep(seconds)
        except anyio.get_cancelled_exc_class():
            self._abort(calls)
            raise

    def _abort(self, calls: Sequence[ScriptedCall]) -> None:
        self.stats.num_aborts += len(calls)
        self.aborted.extend(calls)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeUnavailable("the runtime is closed", runtime=self.model)

    def _require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise CapabilityMissing(str(capability.name), runtime=self.model)

    def _opened(self, handle: ScriptedSequence) -> None:
        self._live.add(handle)
        self.stats.num_handles_opened += 1
        self.stats.num_live_handles += 1

    def _release(self, handle: ScriptedSequence) -> None:
        if not handle.released:
            handle.released = True
            self._live.discard(handle)
            self.stats.num_live_handles -= 1

    # -- tokens and script compilation ---------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        return [ord(c) + CHAR_TOKEN_OFFSET for c in text]

    def _encode(self, text: str) -> list[int]:
        """Tokenize generated text: special-token strings become their ids."""
        ids: list[int] = []
        pos = 0
        for match in self._special_re.finditer(text):
            ids.extend([ord(c) + CHAR_TOKEN_OFFSET for c in text[pos : match.start()]])
            ids.append(self._special_ids[match.group()])
            pos = match.end()
        ids.extend([ord(c) + CHAR_TOKEN_OFFSET for c in text[pos:]])
        return ids

    def _token_text(self, token: int) -> str:
        if token >= CHAR_TOKEN_OFFSET:
            return chr(token - CHAR_TOKEN_OFFSET)
        return self._special_texts[token]

    def _detokenize(self, token_ids: Sequence[int]) -> str:
        try:
            return "".join([self._token_text(t) for t in token_ids])
        except (KeyError, ValueError, OverflowError) as exc:
            bad = next(t for t in token_ids if not self._is_token(t))
            raise RequestRejected(f"unknown token id {bad}", runtime=self.model) from exc

    def _is_token(self, token: int) -> bool:
        return token in self._special_texts or (
            CHAR_TOKEN_OFFSET <= token < CHAR_TOKEN_OFFSET + 0x110000
        )

    def _render(self, prompt: Prompt) -> tuple[list[int], str]:
        if prompt.text is not None:
            ids, text = self._tokenize(prompt.text), prompt.text
        elif prompt.token_ids is not None:
            ids = list(prompt.token_ids)
            text = self._detokenize(ids)
        else:
            start, end = self._special_ids["<|im_start|>"], self._special_ids["<|im_end|>"]
            turns: list[tuple[str, str | None]] = [
                (m.role, m.content) for m in prompt.messages or ()
            ]
            if prompt.add_generation_prompt:
                turns.append(("assistant", None))
            ids, parts = [], []
            for role, content in turns:
                ids.append(start)
                ids.extend(self._tokenize(f"{role}\n"))
                parts.append(f"<|im_start|>{role}\n")
                if content is not None:
                    ids.extend(self._tokenize(content))
                    ids.append(end)
                    ids.extend(self._tokenize("\n"))
                    parts.append(f"{content}<|im_end|>\n")
            text = "".join(parts)
        if prompt.assistant_prefix:
            ids.extend(self._encode(prompt.assistant_prefix))
            text += prompt.assistant_prefix
        return ids, text

    def _compile_reply(self, reply: ScriptReply, label: str, key: int) -> _Reply:
        fault = None if reply.raise_error is None else (reply.raise_as, reply.raise_error)
        sources = reply.outputs or ((ScriptedOutput(),) if fault else ())
        for text, values in reply.scores.items():
            if isinstance(values, tuple) and len(values) != len(self._encode(text)):
                raise ConfigError(
                    f"{len(values)} values for the {len(self._encode(text))} tokens of {text!r}",
                    field=f"{label}.scores",
                )
        return _Reply(
            label,
            key,
            tuple(
                self._compile_output(output, reply, f"{label}.outputs[{j}]")
                for j, output in enumerate(sources)
            ),
            reply.pick,
            reply.then,
            MappingProxyType(dict(reply.scores)),
            reply.delay,
            fault,
        )

    def _compile_output(
        self, output: ScriptedOutput, reply: ScriptReply | None, where: str
    ) -> _Output:
        ids = tuple(self._encode(output.text))
        entropy = output.entropy
        for name, values in (
            ("logprobs", output.logprobs),
            ("entropy", entropy if isinstance(entropy, tuple) else None),
            ("top_logprobs", output.top_logprobs),
        ):
            if values is not None and len(values) != len(ids):
                raise ConfigError(
                    f"{len(values)} values for the {len(ids)} tokens of {output.text!r}",
                    field=f"{where}.{name}",
                )
        top = None
        if output.top_logprobs is not None:
            top = tuple(
                {self._one_token(text, f"{where}.top_logprobs"): lp for text, lp in table.items()}
                for table in output.top_logprobs
            )
        inherited = reply or ScriptReply()
        raise_error = inherited.raise_error if output.raise_error is None else output.raise_error
        return _Output(
            ids,
            output.logprobs,
            (entropy,) if isinstance(entropy, float) else (entropy or ()),
            top,
            inherited.delay if output.delay is None else output.delay,
            inherited.token_delay if output.token_delay is None else output.token_delay,
            None if raise_error is None else (output.raise_as or inherited.raise_as, raise_error),
        )

    def _responded(self, produced: str | ScriptedOutput) -> _Output:
        if isinstance(produced, str):  # the benchmark path: keep it cheap
            return _Output(tuple(self._encode(produced)), None, (), None, 0.0, 0.0, None)
        return self._compile_output(produced, None, "responder")

    def _one_token(self, text: str, where: str) -> int:
        ids = self._encode(text)
        if len(ids) != 1:
            raise ConfigError(f"{text!r} is not one token", field=where)
        return ids[0]


class ScriptedSequence:
    """A :class:`~orchestrator.SequenceHandle` over an in-memory token list; a view when it
    has ``segments`` (their tokens come first, read live from the source handles)."""

    def __init__(
        self,
        runtime: ScriptedRuntime,
        token_ids: list[int],
        segments: tuple[SegmentSpec, ...] = (),
        *,
        is_view: bool = False,
    ) -> None:
        self._runtime = runtime
        self._own = token_ids
        self.segments = segments
        self.is_view = is_view or bool(segments)
        self.released = False
        runtime._opened(self)

    @property
    def token_ids(self) -> list[int]:
        ids: list[int] = []
        for segment in self.segments:
            ids.extend(segment.handle._own[segment.start : segment.end])
        ids.extend(self._own)
        return ids

    async def generate(self, sampling: SamplingParams | None = None) -> Completion:
        """Match rules against the whole sequence text; append the completion's tokens.
        Recorded as a ``"sequence"`` call; the sequence is resident, so nothing is prefilled.

        :raises RequestRejected: if ``sampling.n`` is not 1.
        """
        rt = self._usable(Capability.SEQUENCE_HANDLES)
        sampling = sampling or SamplingParams.model_validate({})
        if sampling.n != 1:
            raise RequestRejected(
                f"a sequence generates one sample at a time (n={sampling.n})", runtime=rt.model
            )
        ids = self.token_ids
        answer = rt._answer(
            "sequence", ids, rt._detokenize(ids), sampling, resident=len(ids), request=None
        )
        await rt._wait(answer.seconds, [answer.call])
        rt._raise_fault(answer)
        rt._settle(answer)
        completion = answer.samples[0][0]
        self._own.extend(completion.token_ids)
        return completion

    async def extend(self, token_ids: Sequence[int]) -> None:
        rt = self._usable(Capability.TOKEN_INJECTION)
        ids = list(token_ids)
        rt._detokenize(ids)  # rejects unknown ids before anything changes
        await checkpoint()
        self._own.extend(ids)
        rt.stats.num_prefill_tokens += len(ids)

    async def fork(self, n: int) -> list[SequenceHandle]:
        """``n`` plain handles holding this sequence's current tokens (a view's included)."""
        rt = self._usable(Capability.SEQUENCE_HANDLES)
        if n < 1:
            raise RequestRejected(f"fork needs n >= 1, got {n}", runtime=rt.model)
        await checkpoint()
        rt.stats.num_forks += 1
        ids = self.token_ids
        return [ScriptedSequence(rt, list(ids)) for _ in range(n)]

    async def drop_range(self, start: int, end: int) -> None:
        """Delete ``[start, end)``; counts ``len - end`` re-encoded tokens. A view can drop
        only its own tokens: its segments belong to their source handles."""
        rt = self._usable(Capability.KV_RANGE_DROP)
        total = len(self.token_ids)
        base = total - len(self._own)
        if not 0 <= start <= end <= total:
            raise RequestRejected(
                f"drop_range({start}, {end}) lies outside the sequence's {total} tokens",
                runtime=rt.model,
            )
        if start < base:
            raise RequestRejected(
                f"drop_range({start}, {end}) reaches into the view's segments (its first "
                f"{base} tokens); drop on their source handles instead",
                runtime=rt.model,
            )
        await checkpoint()
        del self._own[start - base : end - base]
        rt.stats.num_drops += 1
        rt.stats.num_reencoded_tokens += total - end

    async def relink(self, segments: Sequence[SegmentSpec]) -> None:
        """Replace this view's segments; its own tokens stay (counted in ``num_relinks``).

        :raises RequestRejected: if this handle is not a view, or a segment is invalid.
        """
        rt = self._usable(Capability.SHARED_SEGMENTS)
        if not self.is_view:
            raise RequestRejected("relink needs a view (a handle made by view())", runtime=rt.model)
        rt._check_segments(segments)
        await checkpoint()
        self.segments = tuple(segments)
        rt.stats.num_relinks += 1

    async def release(self) -> None:
        """Idempotent, and no cancellation point: it runs in shielded cleanup."""
        self._runtime._release(self)

    def _usable(self, capability: Capability) -> ScriptedRuntime:
        rt = self._runtime
        rt._check_open()
        rt._require(capability)
        if self.released:
            raise RequestRejected("the sequence was released", runtime=rt.model)
        return rt
