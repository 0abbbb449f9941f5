"""``EmbeddedRuntime``: the core's runtime protocol, in process, over the engine.

Requests are validated and rendered here (so every error names the request's problem
before anything is queued), become sequences, and are driven to completion by the engine
(see ``engine.py``). Each public coroutine frees what it queued on every exit path, in a
shielded section, so a cancelled or failed call leaves no block in use. Sequence handles
and views live in ``handles.py``; request bookkeeping and scoring in ``requests.py``;
construction from weights in ``build.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import torch

from orchestrator import (
    Capability,
    ContextOverflow,
    GenerateRequest,
    GenerateResult,
    GenerationChunk,
    Prompt,
    RequestRejected,
    RuntimeUnavailable,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    SegmentSpec,
)

from .block_manager import BlockStatistics
from .build import Components
from .config import ModelConfig
from .generation import Generation
from .grammar import GrammarCompiler, GrammarState
from .handles import EmbeddedSequenceHandle, open_handle, open_view
from .requests import PreparedRequest, score

__all__ = ["EmbeddedRuntime"]

PROVIDER = "orchestrator.embedded"
_GOLDEN = 0x9E3779B97F4A7C15


def _raise_first(states: list[PreparedRequest]) -> None:
    for state in states:
        state.raise_error()


class EmbeddedRuntime:
    """The embedded runtime. Build it with :meth:`from_pretrained` (or a spec
    ``embedded:TARGET?...`` through the plugin); close it with :meth:`aclose`.

    ``cost_per_token`` is the forward cost of one token in GFLOPs (two per weight touched):
    0.27 for SmolLM2-135M, proportionally less for a first-k-layers draft. ``statistics()``
    reports the KV block pool (blocks in use return to zero once every request finished and
    every handle was released); ``engine.runner`` counts tokens computed and blocks copied.
    """

    provider = PROVIDER
    capabilities = (
        Capability.PREFIX_SHARING
        | Capability.SEQUENCE_HANDLES
        | Capability.KV_RANGE_DROP
        | Capability.SHARED_SEGMENTS
        | Capability.EXACT_ENTROPY
        | Capability.GRAMMAR
        | Capability.TOKEN_INJECTION
        | Capability.DETERMINISTIC_SAMPLING
        | Capability.STREAMING
    )

    def __init__(self, components: Components, *, model: str) -> None:
        self.model = model
        self._c = components
        self.engine = components.engine
        self.tokenizer = components.tokenizer
        self.max_context = components.max_context
        #: The HF directory the weights came from (for a GGUF: its dequantized cache entry).
        self.model_directory = components.directory
        config = components.model_config
        # Relative cost: GFLOPs of one forward token (2 per parameter touched).
        per_layer = config.hidden_size * (
            (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
            + config.num_heads * config.head_dim
            + 3 * config.intermediate_size
        )
        self.cost_per_token = (
            2 * (config.num_layers * per_layer + config.hidden_size * config.vocab_size) / 1e9
        )
        self._grammars: GrammarCompiler | None = None
        self._closed = False

    @classmethod
    def from_pretrained(cls, path: str | None = None, **options: Any) -> EmbeddedRuntime:
        """Build a runtime from a HF directory or a ``.gguf`` file (None: SmolLM2's GGUF).

        :param options: ``layers`` (first-k-layers draft), ``name``, and any
            :class:`~orchestrator.runtimes.embedded.config.EngineConfig` field.
        """
        from .build import build

        components, name = build(path, **options)
        return cls(components, model=name)

    @property
    def model_config(self) -> ModelConfig:
        return self._c.model_config

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._c.model_config.eos_token_ids

    @property
    def vocab_size(self) -> int:
        return self._c.model_config.vocab_size

    def statistics(self) -> BlockStatistics:
        return self.engine.blocks.statistics()

    # -- validation ----------------------------------------------------------------------

    def check_open(self) -> None:
        if self._closed:
            raise RuntimeUnavailable("the runtime is closed", runtime=PROVIDER)

    def check_tokens(self, token_ids: Sequence[int]) -> None:
        bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise RequestRejected(
                f"token id {bad[0]} is outside the vocabulary of {self.vocab_size}",
                runtime=PROVIDER,
            )

    def check_prompt(self, token_ids: list[int]) -> None:
        if not token_ids:
            raise RequestRejected("the prompt is empty", runtime=PROVIDER)
        self.check_tokens(token_ids)
        if len(token_ids) >= self.max_context:
            raise ContextOverflow(len(token_ids), self.max_context)
        blocks = self.engine.blocks
        if -(-len(token_ids) // blocks.block_size) > len(blocks.blocks):
            raise RequestRejected(
                f"a prompt of {len(token_ids)} tokens exceeds the KV cache budget of "
                f"{len(blocks.blocks)} blocks of {blocks.block_size} tokens",
                runtime=PROVIDER,
            )

    def clamp(self, params: SamplingParams, context: int) -> SamplingParams:
        """Cap ``max_new_tokens`` at the room left in the context (SGLang does the same)."""
        room = self.max_context - context
        if params.max_new_tokens <= room:
            return params
        return params.model_copy(update={"max_new_tokens": room})

    def grammar_state(self, params: SamplingParams) -> GrammarState | None:
        if params.grammar is None:
            return None
        if self._grammars is None:
            self._grammars = GrammarCompiler(self.tokenizer.hf, self.vocab_size, self.eos_token_ids)
        return self._grammars.new_state(params.grammar)

    def new_generation(self, params: SamplingParams, index: int = 0) -> Generation:
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        generator = torch.Generator(device="cpu").manual_seed((seed + index * _GOLDEN) % 2**63)
        return Generation(
            params,
            generator=generator,
            tokenizer=self.tokenizer,
            eos_token_ids=self.eos_token_ids,
            grammar=self.grammar_state(params),
        )

    def _prepare(self, request: GenerateRequest) -> PreparedRequest:
        self.check_open()
        token_ids = self.tokenizer.render(request.prompt)
        self.check_prompt(token_ids)
        params = self.clamp(request.sampling, len(token_ids))
        gens = [self.new_generation(params, i) for i in range(params.n)]
        seq = self.engine.new_sequence(token_ids)
        seq.gen, gens[0].seq = gens[0], seq
        seq.pending_forks = gens[1:]
        return PreparedRequest(request, seq, gens)

    async def _abort(self, requests: list[PreparedRequest]) -> None:
        with anyio.CancelScope(shield=True):
            async with self.engine.lock():
                for req in requests:
                    for gen in req.gens:
                        if gen.seq is not None:
                            self.engine.abort(gen.seq)
                    self.engine.abort(req.seq)

    # -- the protocol ----------------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        states = [self._prepare(r) for r in requests]
        try:
            async with self.engine.lock():
                for state in states:
                    self.engine.scheduler.add(state.seq)
            await self.engine.wait_until(
                lambda: all(s.done for s in states), check=lambda: _raise_first(states)
            )
            return [s.result() for s in states]
        finally:
            await self._abort(states)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        state = self._prepare(request)
        try:
            async with self.engine.lock():
                self.engine.scheduler.add(state.seq)
            while True:
                state.raise_error()
                for index, gen in enumerate(state.gens):
                    ids, text = gen.stream_delta()
                    if ids or text:
                        yield GenerationChunk(index=index, token_ids=ids, text=text)
                if state.done:
                    break
                await self.engine.advance()
            state.raise_error()
            result = state.result()
            for index, completion in enumerate(result.completions):
                yield GenerationChunk(
                    index=index, token_ids=[], text="", completion=completion, usage=result.usage
                )
        finally:
            await self._abort([state])

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.check_open()
        return await score(self, requests)

    async def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        self.check_tokens(token_ids)
        return self.tokenizer.decode(token_ids)

    async def render(self, prompt: Prompt) -> list[int]:
        return self.tokenizer.render(prompt)

    async def open_sequence(self, prompt: Prompt) -> EmbeddedSequenceHandle:
        self.check_open()
        return await open_handle(self, self.tokenizer.render(Prompt.of(prompt)))

    async def view(self, segments: Sequence[SegmentSpec]) -> EmbeddedSequenceHandle:
        self.check_open()
        return await open_view(self, list(segments))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            async with self.engine.lock():
                scheduler = self.engine.scheduler
                for seq in [*scheduler.waiting, *scheduler.running]:
                    if seq.gen is not None:
                        seq.gen.fail(RuntimeUnavailable("the runtime was closed", runtime=PROVIDER))
                    scheduler.free(seq)
