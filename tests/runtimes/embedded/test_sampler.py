"""Sampler: the filters keep exactly the tokens they should, draws follow the filtered
distribution, and a seeded row depends on nothing but its own generator."""

from __future__ import annotations

import math

import pytest
import torch
from orchestrator.runtimes.embedded.sampler import sample

from orchestrator import SamplingParams

PROBS = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])


def frequencies(params: SamplingParams, rows: int = 4000) -> torch.Tensor:
    logits = PROBS.log().repeat(rows, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]
    tokens = torch.tensor(sample(logits, [params] * rows, generators).token_ids)
    return torch.bincount(tokens, minlength=5).float() / rows


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), PROBS),
        (SamplingParams(top_k=2), torch.tensor([4 / 7, 3 / 7, 0, 0, 0])),
        (SamplingParams(top_p=0.7), torch.tensor([4 / 7, 3 / 7, 0, 0, 0])),  # 0.4 + 0.3 reach 0.7
        (SamplingParams(top_p=0.71), torch.tensor([0.4, 0.3, 0.15, 0, 0]) / 0.85),
        (SamplingParams(min_p=0.3), torch.tensor([0.4, 0.3, 0.15, 0, 0]) / 0.85),  # >= 0.12
        (SamplingParams(top_k=3, top_p=0.5), torch.tensor([4 / 7, 3 / 7, 0, 0, 0])),  # p on 0.85
    ],
)
def test_draws_follow_the_filtered_distribution(
    params: SamplingParams, expected: torch.Tensor
) -> None:
    observed = frequencies(params)
    assert torch.allclose(observed, expected, atol=0.03)
    assert bool((observed[expected == 0] == 0).all())


def test_temperature_sharpens() -> None:
    observed = frequencies(SamplingParams(temperature=0.5))
    expected = PROBS**2 / (PROBS**2).sum()
    assert torch.allclose(observed, expected, atol=0.03)


def test_a_nucleus_wider_than_the_window_is_sampled_exactly() -> None:
    vocab = 1000  # flat: the 0.9 nucleus holds 900 tokens, far beyond the 256-token window
    logits = torch.zeros(2000, vocab)
    generators = [torch.Generator().manual_seed(i) for i in range(2000)]
    tokens = torch.tensor(sample(logits, [SamplingParams(top_p=0.9)] * 2000, generators).token_ids)
    assert int((tokens >= 256).sum()) > 1000  # ranks beyond the window are drawn
    assert len(set(tokens.tolist())) > 600


def test_a_seeded_row_ignores_its_batch_mates() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 300)
    params = [SamplingParams(temperature=0.9, top_p=0.8, seed=1)] * 4

    def draw(rows: list[int]) -> list[int]:
        generators = [torch.Generator().manual_seed(100 + r) for r in rows]
        return sample(logits[rows], [params[r] for r in rows], generators).token_ids

    together = draw([0, 1, 2, 3])
    assert [draw([r])[0] for r in range(4)] == together


def test_greedy_logprobs_and_entropy_are_the_models() -> None:
    logits = PROBS.log()[None]
    params = [SamplingParams(temperature=0, logprobs=True, top_logprobs=2, return_entropy=True)]
    out = sample(logits, params, [torch.Generator()])
    assert out.token_ids == [0]
    assert out.logprobs[0] == pytest.approx(math.log(0.4), abs=1e-6)
    assert out.top_logprobs[0] == pytest.approx({0: math.log(0.4), 1: math.log(0.3)}, abs=1e-6)
    entropy = -sum(p * math.log(p) for p in PROBS.tolist())
    assert out.entropies[0] == pytest.approx(entropy, abs=1e-6)
