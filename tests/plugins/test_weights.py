"""Particle weights, multinomial resampling and softmax selection."""

from __future__ import annotations

import math
import random

import pytest
from orchestrator.plugins.search.weights import (
    logit,
    multinomial,
    particle_weights,
    softmax,
    softmax_select,
)


def test_logit_clips_the_ends() -> None:
    assert logit(0.5) == 0.0
    assert logit(0.8) == pytest.approx(math.log(4.0))
    assert logit(1.0) == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert logit(0.0) == pytest.approx(-logit(1.0))


def test_particle_weights_are_softmax_of_logits_over_temperature() -> None:
    rewards = [0.2, 0.5, 0.8]
    odds = [0.25, 1.0, 4.0]  # exp(logit(r)) = r / (1 - r)
    assert particle_weights(rewards) == pytest.approx([o / sum(odds) for o in odds])
    sq = [math.sqrt(o) for o in odds]  # temperature 2 takes the square root of the odds
    assert particle_weights(rewards, temperature=2.0) == pytest.approx([s / sum(sq) for s in sq])


def test_softmax_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="softmax of no values"):
        softmax([])
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        softmax([1.0], temperature=0)
    with pytest.raises(ValueError, match=r"weights must have a positive sum, got \[0.0, 0.0\]"):
        multinomial([0.0, 0.0], 1, random.Random(0))


def test_multinomial_frequencies_match_the_weights() -> None:
    weights = particle_weights([0.1, 0.4, 0.6, 0.95])
    num_seeds, num_draws = 2000, 8
    counts = [0] * 4
    for seed in range(num_seeds):
        for index in multinomial(weights, num_draws, random.Random(seed)):
            counts[index] += 1
    total = num_seeds * num_draws
    for count, weight in zip(counts, weights, strict=True):
        sigma = math.sqrt(weight * (1 - weight) / total)
        assert abs(count / total - weight) < 4 * sigma


def test_multinomial_never_draws_a_zero_weight() -> None:
    draws = multinomial([0.0, 1.0, 0.0], 50, random.Random(3))
    assert draws == [1] * 50


def test_softmax_select() -> None:
    assert softmax_select([0.2, 0.9, 0.9], 0.0, random.Random(0)) == 1  # argmax, first on ties
    picks = [softmax_select([0.0, math.log(3.0)], 1.0, random.Random(s)) for s in range(4000)]
    assert abs(picks.count(1) / 4000 - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 4000)
