"""Sampling: temperature, top-k, top-p, min-p, with one ``torch.Generator`` per sample.

Each sample draws exactly one uniform number per token from its own generator and picks the
token by inverting the cumulative distribution, so a seeded request gives the same tokens
whatever else shares its batch. Filters follow HF's order (temperature, top-k, top-p on
what top-k kept, then min-p) and run vectorised over the sampled rows. Top-k and top-p look
at the best ``_WINDOW`` tokens (a ``topk``, not a full sort of the vocabulary); a row whose
nucleus is wider than that window is sorted in full, so the result is exact either way.

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

_WINDOW = 256


@dataclasses.dataclass(slots=True)
class SampleBatch:
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]]
    entropies: list[float]


def _truncate(
    probs: torch.Tensor, params: list[SamplingParams], width: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Top-k then top-p within the best ``width`` tokens.

    # probs: [N, V] -> weights [N, width] (dropped tokens 0), token ids [N, width], and the
    # rows whose nucleus does not fit in the window.
    """
    device = probs.device
    values, ids = probs.topk(width, dim=-1)
    rank = torch.arange(width, device=device)[None, :]
    top_k = torch.tensor(
        [p.top_k if 0 < p.top_k <= width else width for p in params], device=device
    )
    kept = values.masked_fill(rank >= top_k[:, None], 0.0)
    mass = kept.cumsum(dim=-1)
    total = mass[:, -1:]
    top_p = torch.tensor([p.top_p for p in params], device=device)[:, None]
    # Drop a token when what came before it already reaches top_p of the kept mass.
    kept = kept.masked_fill((mass - kept) >= top_p * total, 0.0)
    unlimited = [p.top_k <= 0 or p.top_k > width for p in params]
    overflow = [
        i
        for i, flag in enumerate(unlimited)
        if flag and float(total[i]) < params[i].top_p and width < probs.shape[-1]
    ]
    return kept, ids, overflow


def _draw(weights: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token index per row by inverse CDF. # weights: [N, W] -> [N]"""
    cdf = weights.cumsum(dim=-1)
    uniform = torch.stack([torch.rand((), generator=g) for g in generators]).to(weights.device)
    target = (uniform * cdf[:, -1])[:, None]
    picked = torch.searchsorted(cdf, target, right=True)[:, 0]
    return picked.clamp_(max=weights.shape[-1] - 1)


def _sample_rows(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> torch.Tensor:
    # logits: [N, V] of the sampled rows -> token ids [N]
    temperature = torch.tensor([p.temperature for p in params], device=logits.device)[:, None]
    probs = (logits / temperature).softmax(dim=-1)
    if any(p.min_p > 0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], device=logits.device)[:, None]
        probs = probs.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, 0.0)
    if not any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        return _draw(probs, generators)
    width = min(probs.shape[-1], max(_WINDOW, *(p.top_k for p in params)))
    weights, ids, overflow = _truncate(probs, params, width)
    tokens = torch.empty(len(params), dtype=torch.int64, device=logits.device)
    groups = [([i for i in range(len(params)) if i not in overflow], weights, ids)]
    if overflow:  # the few rows whose nucleus is wider than the window: over everything
        rows = torch.tensor(overflow, device=logits.device)
        full = _truncate(probs[rows], [params[i] for i in overflow], probs.shape[-1])
        groups = [(groups[0][0], weights, ids), (overflow, full[0], full[1])]
    for members, group_weights, group_ids in groups:
        if not members:
            continue
        index = torch.tensor(members, device=logits.device)
        if group_weights.shape[0] != len(members):
            group_weights, group_ids = group_weights[index], group_ids[index]
        drawn = _draw(group_weights, [generators[i] for i in members])
        tokens[index] = group_ids.gather(1, drawn[:, None])[:, 0]
    return tokens


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
        chosen_rows = _sample_rows(
            choose[rows], [params[i] for i in sampled], [generators[i] for i in sampled]
        )
        tokens[rows] = chosen_rows
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
