"""Self-consistency: majority over extracted answers, deterministic tie-break."""

from __future__ import annotations

from orchestrator.plugins.scorers.majority_vote import majority, tally
from orchestrator.plugins.search.self_consistency import SelfConsistency, SelfConsistencyConfig

from orchestrator import Expansion, Orchestrator

from .conftest import context, grow


def test_tally_and_tie_break() -> None:
    assert tally(["5", "7", "7.0", None, "$5"]) == {"5": 2.0, "7": 2.0}
    assert majority(["5", "7", "7.0", None, "$5"]) == "5"  # tie: the answer seen first
    assert majority(["7", "5", "7.0", None, "$5"]) == "7"
    assert majority([None, None]) is None
    assert majority(["5", "7", "7"], weights=[3.0, 1.0, 1.0]) == "5"


async def test_majority_node_and_tie_break(bare: Orchestrator) -> None:
    ctx = context(bare)
    sc = SelfConsistency(SelfConsistencyConfig(n=5))
    assert sc.select(ctx) == [Expansion(node_id="r", num_children=5, until="solution")]
    assert sc.done(ctx)
    texts = ["2 + 5 = 7\n#### 7", "#### 5", "#### 7.0", "no idea", "so 5 apples"]
    samples = [grow(ctx, "r", 0.0, finished=True, text=t) for t in texts]
    samples.append(grow(ctx, "r", 0.0, finished=False, text="#### 5"))  # cut short: no vote
    sc.observe(ctx, samples)
    # 7 (r.0, r.2) and 5 (r.1, r.4) tie at two votes; 7 appeared first.
    assert ctx.meta["search"] == {"strategy": "self_consistency", "votes": {"7": 2.0, "5": 2.0}}
    assert sc.best(ctx) is samples[0]
    two = {"votes": 2.0}
    assert [s.attrs.stats for s in samples] == [two, two, two, {}, two, {}]


async def test_weighted_votes(bare: Orchestrator) -> None:
    ctx = context(bare)
    sc = SelfConsistency(SelfConsistencyConfig(n=3, weighted=True))
    sc.select(ctx)
    samples = [
        grow(ctx, "r", 0.2, finished=True, text="#### 7"),
        grow(ctx, "r", 0.2, finished=True, text="#### 7"),
        grow(ctx, "r", 0.9, finished=True, text="#### 5"),
    ]
    sc.observe(ctx, samples)
    assert sc.best(ctx) is samples[2]
