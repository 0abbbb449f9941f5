"""The core's runtime protocol served by one or several SGLang servers.

Prompts are rendered and tokenized here (:mod:`.tokenizer`) and sent as ``input_ids``;
requests go out with prefix-aware fan-out and per-request failover (:mod:`.dispatch`);
SGLang's answers become completions with usage from ``meta_info`` (:mod:`.convert`).

What the capability flags promise on SGLang:

- ``PREFIX_SHARING``: RadixAttention reuses cached prefixes, and the prefix shared by
  requests that arrive together (a batch, or a fork's concurrent calls) is prefilled once
  before they run.
- ``STREAMING``: tokens arrive as SGLang produces them (server-sent events).
- ``GRAMMAR`` (unless ``grammar=false``): ``json_schema`` / ``regex`` / ``ebnf`` through the
  server's grammar backend (xgrammar).
- ``DETERMINISTIC_SAMPLING`` only with ``deterministic=true``, for a server started with
  ``--enable-deterministic-inference``: without it SGLang 0.5.17 does not make sampling
  reproducible by seed.
- Not ``EXACT_ENTROPY``: entropies are lower bounds from the top-``entropy_top_k`` logprobs.
  No sequence handles, KV range drops or shared segments: graphs take their documented
  fallbacks. A result whose entropies are approximate says so in ``meta["fallback"]``,
  which the executor records in the run.

Usage::

    runtime = SGLangRuntime.connect(["http://127.0.0.1:30000"])
    [result] = await runtime.generate([GenerateRequest(prompt="What is 12 + 7?")])
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from orchestrator import (
    Capability,
    CapabilityMissing,
    GenerateRequest,
    GenerateResult,
    GenerationChunk,
    Prompt,
    ScoreRequest,
    ScoreResult,
    Usage,
)

from .client import RetryPolicy, SGLangClient
from .config import SGLangConfig
from .convert import StreamAssembler, completion_from_output, usage_from_meta
from .dispatch import Dispatcher, Done, Job, SGLangStatistics
from .params import sampling_to_sglang
from .pool import Backend, ServerPool
from .scoring import plan_scores
from .session import SGLangSession
from .tokenizer import ChatTokenizer

__all__ = ["SGLangRuntime"]


class SGLangRuntime:
    """See the module docstring. Build with :meth:`connect`, or from backends you made.

    :param backends: the servers (HTTP clients, or an in-process engine).
    :param tokenizer: the served model's tokenizer (ids must match the server's model).
    :param config: options (:class:`.config.SGLangConfig`).
    """

    provider = "sglang"

    def __init__(
        self,
        backends: Sequence[Backend],
        tokenizer: ChatTokenizer,
        config: SGLangConfig | None = None,
    ) -> None:
        self.config = config or SGLangConfig()
        self.tokenizer = tokenizer
        self.model = self.config.model or tokenizer.name
        self.cost_per_token = self.config.cost_per_token
        caps = Capability.PREFIX_SHARING | Capability.STREAMING
        if self.config.grammar:
            caps |= Capability.GRAMMAR
        if self.config.deterministic:
            caps |= Capability.DETERMINISTIC_SAMPLING
        self.capabilities = caps
        self.pool = ServerPool(backends, cooldown_s=self.config.cooldown_s)
        #: Sends the bodies (fan-out, failover, aborts); sessions send through it too.
        self.dispatcher = Dispatcher(
            self.pool,
            fanout=self.config.fanout,
            min_prefix_tokens=self.config.min_prefix_tokens,
            abort_timeout_s=self.config.abort_timeout_s,
            window_s=self.config.fanout_window_s,
        )

    @classmethod
    def connect(
        cls,
        urls: Sequence[str],
        tokenizer: ChatTokenizer | None = None,
        config: SGLangConfig | None = None,
    ) -> SGLangRuntime:
        """A runtime over HTTP servers (or one router URL). Opens no connection yet.

        :param tokenizer: loaded tokenizer; default: ``config.tokenizer`` or SmolLM2 (loading
            blocks for a few seconds).
        """
        config = config or SGLangConfig()
        # Several servers: retry each briefly, then let the pool fail over.
        attempts = config.max_attempts if len(urls) == 1 else min(config.max_attempts, 2)
        clients = [
            SGLangClient(
                url,
                timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
                retry=RetryPolicy(max_attempts=attempts, backoff_s=config.backoff_s),
                max_connections=config.max_connections,
            )
            for url in urls
        ]
        return cls(clients, tokenizer or ChatTokenizer.load(config.tokenizer), config)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.tokenizer.eos_token_ids

    def statistics(self) -> SGLangStatistics:
        """Requests, prefills, aborts and failovers sent, and the tokens SGLang reported."""
        return self.dispatcher.statistics()

    # -- the protocol --------------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        jobs = [self._job(r) for r in requests]
        done = await self.dispatcher.run(jobs)
        return [self.build_result(r, d) for r, d in zip(requests, done, strict=True)]

    async def stream(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        """Chunks as SGLang produces them; the last chunk of each sample carries its
        completion and usage. Closing the iterator early aborts the request."""
        job = self._job(request)
        assembler = StreamAssembler(request.sampling, self._decode)
        # aclosing: closing this generator must close the dispatcher's now, which aborts.
        async with aclosing(self.dispatcher.stream(job)) as chunks:
            async for chunk, _backend in chunks:
                yield assembler.feed(chunk)

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced logprobs of each continuation, from SGLang's prompt logprobs
        (:mod:`.scoring`); continuations of one prompt fan out from it."""
        plan = plan_scores(self.tokenizer, requests, self._prompt_key)
        done = await self.dispatcher.run(plan.jobs)
        return plan.results(done, runtime=self.provider)

    async def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode_text(text)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids)

    async def render(self, prompt: Prompt) -> list[int]:
        return self.tokenizer.render(prompt)

    async def abort(self, request_id: str) -> bool:
        """Abort an in-flight request by the rid it was sent with (its ``request_id`` unless
        that clashed with another in flight; ``meta["rid"]`` of a result says which).

        :return: False if no request with that rid is in flight.
        """
        return await self.dispatcher.abort(request_id)

    def open_session(self, key: str, *, capacity_of_str_len: int = 4096) -> SGLangSession:
        """An SGLang session on the server ``key`` maps to (use ``async with``)."""
        return SGLangSession(
            self, self.pool.server_for(key), capacity_of_str_len=capacity_of_str_len
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- building bodies and results -----------------------------------------------------

    def _job(self, request: GenerateRequest) -> Job:
        sampling = request.sampling
        if sampling.grammar is not None and Capability.GRAMMAR not in self.capabilities:
            raise CapabilityMissing("GRAMMAR", runtime=self.provider)
        ids = self.tokenizer.render(request.prompt)
        return Job(
            body=self.request_body(ids, request),
            ids=ids,
            key=self._key(request, ids),
            wanted_rid=request.request_id,
        )

    def request_body(self, ids: list[int], request: GenerateRequest) -> dict[str, Any]:
        """The ``/generate`` body for ``request`` over ``ids`` (without ``rid``)."""
        sampling = request.sampling
        body: dict[str, Any] = {
            "input_ids": ids,
            "sampling_params": sampling_to_sglang(
                sampling, explicit=self.config.sampling_defaults == "explicit"
            ),
        }
        num_top = max(
            sampling.top_logprobs,
            self.config.entropy_top_k if sampling.return_entropy else 0,
        )
        if sampling.logprobs or num_top:
            body["return_logprob"] = True
        if num_top:
            body["top_logprobs_num"] = num_top
        return body

    def _key(self, request: GenerateRequest, ids: Sequence[int]) -> str:
        """The affinity key: a tree's requests share it (see :mod:`.config`)."""
        mode, sep, rid = self.config.affinity, self.config.affinity_sep, request.request_id
        if rid and (mode == "request" or (mode == "auto" and sep in rid)):
            return "id:" + rid.split(sep, 1)[0]
        return self._prompt_key(ids)

    def _prompt_key(self, ids: Sequence[int]) -> str:
        head = ",".join(map(str, ids[: self.config.affinity_tokens]))
        return "prompt:" + hashlib.blake2b(head.encode(), digest_size=8).hexdigest()

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def build_result(self, request: GenerateRequest, done: Done) -> GenerateResult:
        """The result of ``request`` from its finished job (one output, or ``n``)."""
        outputs = done.output if isinstance(done.output, list) else [done.output]
        completions = [completion_from_output(o, request.sampling, self._decode) for o in outputs]
        usage = sum((usage_from_meta(o.get("meta_info", {})) for o in outputs), Usage())
        meta = done.meta()
        if request.sampling.return_entropy:
            # The executor records meta["fallback"] as a fallback the run took.
            meta["fallback"] = (
                f"sglang: entropies approximated from the top {self.config.entropy_top_k} "
                "logprobs (a lower bound: no EXACT_ENTROPY)"
            )
        return GenerateResult(
            request_id=request.request_id, completions=completions, usage=usage, meta=meta
        )
