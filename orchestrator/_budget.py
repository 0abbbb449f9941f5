"""Run budgets: limits, counters, and token reservations.

A generation reserves its ``max_new_tokens`` before it starts and returns what it did not
use when it ends, so concurrent siblings can never overshoot the token limit together. A
reservation larger than what is left is clamped to what is left; with nothing left,
:class:`BudgetExhausted` is raised before the runtime is called.
"""

from __future__ import annotations

import dataclasses
import time

from pydantic import BaseModel, ConfigDict, Field

from ._exceptions import BudgetExhausted

__all__ = ["Budget", "BudgetLimits", "BudgetUsage"]


class BudgetLimits(BaseModel):
    """Per-run limits; ``None`` means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_generated_tokens: int | None = Field(None, ge=0)
    max_runtime_calls: int | None = Field(None, ge=0)
    max_scorer_calls: int | None = Field(None, ge=0)
    max_wall_seconds: float | None = Field(None, gt=0)
    max_nodes: int | None = Field(None, ge=1)
    max_depth: int | None = Field(None, ge=0)


class BudgetUsage(BaseModel):
    """What a run consumed."""

    model_config = ConfigDict(extra="forbid")

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    runtime_calls: int = 0
    scorer_calls: int = 0
    nodes: int = 0
    max_depth: int = 0
    wall_seconds: float = 0.0


@dataclasses.dataclass(slots=True)
class _Counters:
    """The live counters (a slotted dataclass: updated per node, on the hot path)."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    runtime_calls: int = 0
    scorer_calls: int = 0
    nodes: int = 0
    max_depth: int = 0


class Budget:
    """Counters checked before every runtime call, scorer call and node creation.

    Not thread-safe by design: the executor runs on one event loop, and every check-and-
    reserve below is free of awaits, so concurrent tasks cannot interleave inside one.
    """

    def __init__(self, limits: BudgetLimits | None = None) -> None:
        self.limits = limits or BudgetLimits()
        self.usage = _Counters()
        self._reserved_tokens = 0
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @property
    def reserved_tokens(self) -> int:
        """Tokens reserved by calls in flight."""
        return self._reserved_tokens

    @property
    def tokens_left(self) -> int | None:
        """Generated tokens still available (reserved tokens count as spent)."""
        limit = self.limits.max_generated_tokens
        if limit is None:
            return None
        return max(0, limit - self.usage.generated_tokens - self._reserved_tokens)

    def reserve_tokens(self, wanted: int) -> int:
        """Reserve up to ``wanted`` tokens and return how many were granted (≥ 1 unless
        ``wanted`` is 0); release them with :meth:`settle_tokens`.

        :raises BudgetExhausted: if no token is left, or the call limit is reached.
        """
        limits = self.limits
        if limits.max_runtime_calls is not None and (
            self.usage.runtime_calls >= limits.max_runtime_calls
        ):
            raise BudgetExhausted(
                "max_runtime_calls", self.usage.runtime_calls, limits.max_runtime_calls
            )
        left = self.tokens_left
        if left is not None and wanted > 0:
            if left == 0:
                raise BudgetExhausted(
                    "max_generated_tokens",
                    self.usage.generated_tokens,
                    limits.max_generated_tokens or 0,
                )
            wanted = min(wanted, left)
        self._reserved_tokens += wanted
        self.usage.runtime_calls += 1
        return wanted

    def settle_tokens(
        self, reserved: int, generated: int, prompt: int = 0, cached: int = 0
    ) -> None:
        """Turn a reservation into usage: ``generated`` spent, the rest returned."""
        self._reserved_tokens -= reserved
        self.usage.generated_tokens += generated
        self.usage.prompt_tokens += prompt
        self.usage.cached_tokens += cached

    def charge_scorer_call(self, num_calls: int = 1) -> None:
        """:raises BudgetExhausted: if the scorer-call limit would be exceeded."""
        limit = self.limits.max_scorer_calls
        if limit is not None and self.usage.scorer_calls + num_calls > limit:
            raise BudgetExhausted("max_scorer_calls", self.usage.scorer_calls, limit)
        self.usage.scorer_calls += num_calls

    def charge_node(self, depth: int) -> None:
        """:raises BudgetExhausted: if the node or depth limit would be exceeded."""
        limits = self.limits
        if limits.max_nodes is not None and self.usage.nodes >= limits.max_nodes:
            raise BudgetExhausted("max_nodes", self.usage.nodes, limits.max_nodes)
        if limits.max_depth is not None and depth > limits.max_depth:
            raise BudgetExhausted("max_depth", depth, limits.max_depth)
        self.usage.nodes += 1
        if depth > self.usage.max_depth:
            self.usage.max_depth = depth

    def snapshot(self) -> BudgetUsage:
        return BudgetUsage(**dataclasses.asdict(self.usage), wall_seconds=self.elapsed)
