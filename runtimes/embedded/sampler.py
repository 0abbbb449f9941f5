"""Sampling: temperature, top-k, top-p, min-p, with one ``torch.Generator`` per sample.

Each sample draws from its own generator, exactly one draw per token, so a seeded request
gives the same tokens whatever else shares its batch. Filters run vectorised over the
sampled rows (in that order: temperature, top-k, top-p, min-p); the sorted pass is skipped
when no row asks for top-k or top-p.

Reported logprobs, top-k logprobs and entropies are those of the *model's* distribution
(``log_softmax`` of the raw logits over the full vocabulary), before temperature,
truncation and grammar masks: the exact next-token entropy GlimpRouter routes on, and the
same numbers ``score`` returns.
"""

from __future__ import annotations

import dataclasses

import torch

from orchestrator import SamplingParams

__all__ = ["SampleBatch", "sample"]


@dataclasses.dataclass(slots=True)
class SampleBatch:
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]]
    entropies: list[float]


def _filter(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    # logits: [N, V] of sampled rows -> filtered, temperature-scaled logits
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)[:, None]
    x = logits / temperature
    vocab = x.shape[-1]
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=device)
        top_p = torch.tensor([p.top_p for p in params], device=device)[:, None]
        sorted_x, order = x.sort(dim=-1, descending=True)
        drop = torch.arange(vocab, device=device)[None, :] >= top_k[:, None]
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        probs = sorted_x.softmax(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.empty_like(x).scatter_(-1, order, sorted_x)
    if any(p.min_p > 0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], device=device)[:, None]
        probs = x.softmax(dim=-1)
        x = x.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    return x


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator],
    masked: torch.Tensor | None = None,
) -> SampleBatch:
    """Pick one token per row.

    :param logits: raw model logits, fp32. # [N, V]
    :param masked: the same logits with grammar masks applied, if any row has a grammar.
    """
    choose = logits if masked is None else masked
    n = logits.shape[0]
    tokens = choose.argmax(dim=-1)
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if sampled:
        rows = torch.tensor(sampled, device=logits.device)
        probs = _filter(choose[rows], [params[i] for i in sampled]).softmax(dim=-1)
        for j, i in enumerate(sampled):
            tokens[i] = torch.multinomial(probs[j], 1, generator=generators[i])[0]
    token_ids = tokens.tolist()
    logprobs: list[float] = [0.0] * n
    tops: list[dict[int, float]] = [{} for _ in range(n)]
    entropies: list[float] = [0.0] * n
    wanted = [i for i, p in enumerate(params) if p.logprobs or p.top_logprobs or p.return_entropy]
    if wanted:
        rows = torch.tensor(wanted, device=logits.device)
        log_probs = logits[rows].log_softmax(dim=-1)
        chosen = log_probs.gather(1, tokens[rows][:, None])[:, 0].tolist()
        entropy = (-(log_probs.exp() * log_probs).sum(dim=-1)).tolist()
        k = max(params[i].top_logprobs for i in wanted)
        top_values, top_ids = log_probs.topk(k, dim=-1) if k else (None, None)
        for j, i in enumerate(wanted):
            logprobs[i], entropies[i] = chosen[j], entropy[j]
            if top_values is not None and top_ids is not None and params[i].top_logprobs:
                kk = params[i].top_logprobs
                tops[i] = dict(
                    zip(top_ids[j, :kk].tolist(), top_values[j, :kk].tolist(), strict=True)
                )
    return SampleBatch(token_ids, logprobs, tops, entropies)
