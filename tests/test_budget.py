"""Budget: reservations, clamping, and the limits that raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import Budget, BudgetExhausted, BudgetLimits


def test_reservation_is_clamped_and_settled() -> None:
    budget = Budget(BudgetLimits(max_generated_tokens=100))
    assert budget.reserve_tokens(64) == 64
    assert budget.reserve_tokens(64) == 36  # only 36 left once 64 are reserved
    assert budget.tokens_left == 0
    budget.settle_tokens(64, 10)  # used 10 of 64: 54 come back
    assert budget.tokens_left == 54
    assert budget.reserve_tokens(54) == 54
    budget.settle_tokens(36, 36)
    budget.settle_tokens(54, 54)
    with pytest.raises(
        BudgetExhausted, match=r"budget max_generated_tokens exhausted \(100 of 100\)"
    ):
        budget.reserve_tokens(1)
    assert budget.usage.runtime_calls == 3


def test_call_node_depth_and_scorer_limits() -> None:
    budget = Budget(BudgetLimits(max_runtime_calls=1, max_nodes=2, max_depth=1, max_scorer_calls=3))
    budget.reserve_tokens(5)
    with pytest.raises(BudgetExhausted, match="max_runtime_calls"):
        budget.reserve_tokens(5)
    budget.charge_node(0)
    with pytest.raises(BudgetExhausted, match=r"budget max_depth exhausted \(2 of 1\)"):
        budget.charge_node(2)
    budget.charge_node(1)
    with pytest.raises(BudgetExhausted, match="max_nodes"):
        budget.charge_node(1)
    budget.charge_scorer_call(3)
    with pytest.raises(BudgetExhausted, match="max_scorer_calls"):
        budget.charge_scorer_call(1)
    assert budget.usage.scorer_calls == 3


@given(
    limit=st.integers(0, 500),
    calls=st.lists(st.tuples(st.integers(1, 80), st.floats(0, 1)), max_size=30),
)
def test_concurrent_reservations_never_overshoot(
    limit: int, calls: list[tuple[int, float]]
) -> None:
    """Reserve everything first (as concurrent siblings do), then settle: usage ≤ limit."""
    budget = Budget(BudgetLimits(max_generated_tokens=limit))
    granted = []
    for wanted, _ in calls:
        try:
            granted.append(budget.reserve_tokens(wanted))
        except BudgetExhausted:
            granted.append(0)
    for reserved, (_, fraction) in zip(granted, calls, strict=True):
        if reserved:
            budget.settle_tokens(reserved, round(reserved * fraction))
    assert budget.usage.generated_tokens <= limit
    assert budget.tokens_left == limit - budget.usage.generated_tokens
