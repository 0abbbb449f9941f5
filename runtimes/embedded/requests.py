"""Protocol requests into sequences and back: generate requests (with their ``n`` samples)
and score requests (teacher forcing).

A generate request is one sequence carrying its first sample; samples 2..n are forked off
it once the prompt is computed (``Sequence.pending_forks``), so the prompt is prefilled
once. A score request is one sequence per continuation that collects the logits of every
position from the last prompt token on; continuations share the prompt's KV through the
prefix cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import torch

from orchestrator import (
    GenerateRequest,
    GenerateResult,
    RequestRejected,
    ScoreRequest,
    ScoreResult,
    Usage,
)

from .generation import Generation
from .sequence import Sequence as Seq

if TYPE_CHECKING:
    from .runtime import EmbeddedRuntime

__all__ = ["PreparedRequest", "score"]

PROVIDER = "orchestrator.embedded"


class PreparedRequest:
    """One generate request: its prompt sequence and its ``n`` samples."""

    def __init__(self, request: GenerateRequest, seq: Seq, gens: list[Generation]) -> None:
        self.request, self.seq, self.gens = request, seq, gens

    @property
    def done(self) -> bool:
        return all(g.finished for g in self.gens)

    def raise_error(self) -> None:
        for gen in self.gens:
            if gen.error is not None:
                raise gen.error

    def result(self) -> GenerateResult:
        usage = Usage(
            prompt_tokens=len(self.seq.token_ids) - len(self.gens[0].output_ids),
            cached_tokens=self.seq.num_cached,
            generated_tokens=sum(len(g.output_ids) for g in self.gens),
        )
        completions = [g.completion() for g in self.gens]
        return GenerateResult(
            request_id=self.request.request_id, completions=completions, usage=usage
        )


def _raise_first(seqs: list[Seq]) -> None:
    for seq in seqs:
        seq.raise_error()


async def score(runtime: EmbeddedRuntime, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
    """Teacher-forced logprobs: one sequence per continuation, prompts shared through the
    prefix cache, logits collected from the last prompt position on."""
    jobs: list[tuple[int, Seq]] = []
    for request in requests:
        prompt = runtime.tokenizer.render(request.prompt)
        if not prompt:
            raise RequestRejected("score needs a non-empty prompt", runtime=PROVIDER)
        for cont in request.continuations:
            ids = runtime.tokenizer.encode(cont) if isinstance(cont, str) else list(cont)
            runtime.check_prompt(prompt + ids)
            seq = runtime.engine.new_sequence(prompt + ids)
            seq.logits_from = len(prompt) - 1
            jobs.append((len(prompt), seq))
    seqs = [seq for _, seq in jobs]
    try:
        async with runtime.engine.lock():
            for seq in seqs:
                runtime.engine.scheduler.add(seq)
        await runtime.engine.wait_until(
            lambda: all(s.num_computed == len(s.token_ids) for s in seqs),
            check=lambda: _raise_first(seqs),
        )
    finally:
        with anyio.CancelScope(shield=True):
            async with runtime.engine.lock():
                for seq in seqs:
                    runtime.engine.abort(seq)
    results, cursor = [], 0
    for request in requests:
        token_lps: list[list[float]] = []
        usage = Usage()
        for prompt_len, seq in jobs[cursor : cursor + len(request.continuations)]:
            logits = torch.cat(seq.collected_logits)[: len(seq.token_ids) - prompt_len]
            targets = torch.tensor(seq.token_ids[prompt_len:], device=logits.device)
            lps = logits.log_softmax(-1).gather(1, targets[:, None])[:, 0]
            token_lps.append(lps.tolist())
            usage += Usage(prompt_tokens=len(seq.token_ids), cached_tokens=seq.num_cached)
        cursor += len(request.continuations)
        results.append(
            ScoreResult(logprobs=[sum(t) for t in token_lps], token_logprobs=token_lps, usage=usage)
        )
    return results
