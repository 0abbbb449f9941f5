"""The ``hogwild`` graph: Hogwild! Inference — "Parallel LLM Generation via Concurrent
Attention" (Rodionov et al., arXiv 2504.06261; reference code ``eqimp/hogwild_llm`` @
``1a87a99``, branch ``inference_lib`` @ ``a72df34``; methods.md §3).

W workers (default 2, Alice and Bob) write one reasoning trace together. Each decodes in
lockstep, one token per lockstep step, over a shared cache laid out per worker as common
history → others' current steps → own current step, so every worker reads the others'
unfinished steps as they are written. Finished steps move into the common history; every
256 fed tokens a step opens with the self-check "Quick check: am I doing redundant work?
(yes/no): "; at the end an s1 finisher asks for the ``\\boxed{}`` answer (≤ 16 tokens).

On runtimes with ``Capability.SHARED_SEGMENTS`` the shared cache is real (views over KV
segments, relinked at step boundaries, no KV copied); elsewhere each worker is re-prompted
with its combined view every ``fallback_every`` tokens, reported as a fallback
(:mod:`.engines`). Text: :mod:`.prompt`; bookkeeping: :mod:`.board`; driver: :mod:`.graph`.

Not reproduced: the reference suppresses ``#``, BOS, EOS and ``</think>`` while the workers
collaborate; the runtime protocol has no logit suppression, so an EOS ends the collaboration
instead (as on ``inference_lib``) and ``#`` can be sampled.
"""

from __future__ import annotations

from orchestrator import GraphSpec, StepAttrs, WorkerAttrs, hookimpl

from .config import HogwildConfig
from .graph import HogwildGraph

__all__ = ["HogwildConfig", "HogwildGraph"]


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="hogwild",
            factory=HogwildGraph,
            config_model=HogwildConfig,
            description="Hogwild!: workers decoding in lockstep over a shared KV cache",
            node_kinds={"worker": WorkerAttrs, "step": StepAttrs},
        )
    ]
