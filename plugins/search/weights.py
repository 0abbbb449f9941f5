"""Weights and draws shared by the sampling strategies: logit, softmax, resampling, selection.

Every draw takes a :class:`random.Random` seeded by the caller from ``ctx.seed_for(...)``,
so a run with the same seed makes the same choices whatever the scheduling.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ["logit", "multinomial", "particle_weights", "softmax", "softmax_select"]


def logit(probability: float, eps: float = 1e-7) -> float:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]`` (a score of exactly 0 or
    1 must not become an infinite weight)."""
    p = min(max(probability, eps), 1.0 - eps)
    return math.log(p) - math.log1p(-p)


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """``softmax(values / temperature)``, shifted by the maximum for stability.

    :raises ValueError: if ``values`` is empty or ``temperature`` is not positive.
    """
    if not values:
        raise ValueError("softmax of no values")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    top = max(values)
    exps = [math.exp((v - top) / temperature) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def particle_weights(
    rewards: Sequence[float], temperature: float = 1.0, eps: float = 1e-7
) -> list[float]:
    """Particle filtering's weights: ``softmax(logit(r) / temperature)`` (Puri et al., 2025)."""
    return softmax([logit(r, eps) for r in rewards], temperature)


def multinomial(weights: Sequence[float], num_draws: int, rng: random.Random) -> list[int]:
    """``num_draws`` indices drawn with replacement, index ``i`` with probability ``weights[i]``.

    Draws by inverse CDF on ``rng.random()``, one uniform per draw, so the result depends only
    on the weights and the generator's state.
    """
    if num_draws == 0:
        return []
    cumulative: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    if not total > 0:
        raise ValueError(f"weights must have a positive sum, got {list(weights)}")
    # Rounding can leave u at the very top: fall back to the last index that has weight.
    last = max(i for i, w in enumerate(weights) if w > 0)
    draws = []
    for _ in range(num_draws):
        u = rng.random() * total
        draws.append(next((i for i, c in enumerate(cumulative) if u < c), last))
    return draws


def softmax_select(scores: Sequence[float], temperature: float, rng: random.Random) -> int:
    """Pick one of k scored candidates: the argmax (first on ties) when ``temperature`` is 0,
    else a draw from ``softmax(scores / temperature)``."""
    if temperature == 0:
        return max(range(len(scores)), key=lambda i: (scores[i], -i))
    return multinomial(softmax(scores, temperature), 1, rng)[0]
