"""``score`` on SGLang: teacher-forced logprobs from prompt logprobs.

Each continuation is one ``/generate`` over prompt + continuation with ``return_logprob``
and ``logprob_start_len`` at the prompt's last token: SGLang's ``input_token_logprobs``
then start with a null entry for that token, followed by one entry per continuation token
(``logprob(token | everything before it)``). ``max_new_tokens=1`` is the recorded path
(``generate_prompt_logprobs``); the one token it samples comes from the prefill's logits,
so it costs no decode step. Asking for prompt logprobs caps cache reuse at
``logprob_start_len``, so only the prompt (not the continuations' common start) is offered
for a fan-out prefill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from orchestrator import RequestRejected, RuntimeFailure, ScoreRequest, ScoreResult, Usage

from .convert import usage_from_meta
from .dispatch import Done, Job
from .tokenizer import ChatTokenizer

__all__ = ["ScorePlan", "plan_scores"]


@dataclass
class ScorePlan:
    """The jobs for a batch of score requests, and how to read their answers back."""

    jobs: list[Job] = field(default_factory=list)
    #: Per request, the token count of each continuation (0: nothing sent, logprob 0).
    lengths: list[list[int]] = field(default_factory=list)

    def results(self, done: Sequence[Done], *, runtime: str) -> list[ScoreResult]:
        """:raises RuntimeFailure: if SGLang's answer does not cover the continuation."""
        answers = iter(done)
        return [_result(lengths, answers, runtime) for lengths in self.lengths]


def plan_scores(
    tokenizer: ChatTokenizer,
    requests: Sequence[ScoreRequest],
    key_of: Callable[[list[int]], str],
) -> ScorePlan:
    """Jobs for ``requests``. Text continuations are model text (special tokens parsed).

    :param key_of: the affinity key of a prompt's ids.
    :raises RequestRejected: for an empty prompt (there is no token to condition on).
    """
    plan = ScorePlan()
    for request in requests:
        prompt_ids = tokenizer.render(request.prompt)
        if not prompt_ids:
            raise RequestRejected(
                "score needs a non-empty prompt", runtime="sglang", request=request
            )
        lengths = []
        for continuation in request.continuations:
            cont_ids = (
                tokenizer.encode_model_text(continuation)
                if isinstance(continuation, str)
                else list(continuation)
            )
            lengths.append(len(cont_ids))
            if cont_ids:
                plan.jobs.append(_job(prompt_ids, cont_ids, key_of(prompt_ids)))
        plan.lengths.append(lengths)
    return plan


def _job(prompt_ids: list[int], cont_ids: list[int], key: str) -> Job:
    body = {
        "input_ids": prompt_ids + cont_ids,
        "sampling_params": {"max_new_tokens": 1, "temperature": 0},
        "return_logprob": True,
        "logprob_start_len": len(prompt_ids) - 1,
    }
    return Job(body=body, ids=prompt_ids + cont_ids, key=key, prefix_cap=len(prompt_ids))


def _result(lengths: list[int], answers: Iterator[Done], runtime: str) -> ScoreResult:
    token_logprobs: list[list[float]] = []
    usage = Usage()
    for length in lengths:
        if length == 0:
            token_logprobs.append([])
            continue
        answer = next(answers)
        meta = answer.output.get("meta_info", {})
        entries = (meta.get("input_token_logprobs") or [])[1:]
        if len(entries) != length or any(e[0] is None for e in entries):
            raise RuntimeFailure(
                f"expected {length} continuation logprobs from SGLang, got {entries!r:.200}",
                runtime=runtime,
                request=answer.output,
            )
        token_logprobs.append([float(e[0]) for e in entries])
        usage = usage + usage_from_meta(meta)
    return ScoreResult(
        logprobs=[sum(t) for t in token_logprobs], token_logprobs=token_logprobs, usage=usage
    )
