"""``tim_pruning``: TIM's subtask pruning, as a memory plugin (the TIM graph's default).

TIM ("Beyond Context Limits: Subconscious Threads for Long-Horizon Reasoning", arXiv
2507.16784, §2.1 as quoted in methods.md §1): "When a subtask list is completed, we add this
list to the stack. If the stack size is larger than the threshold, we pop the earliest
subtask list and prune it from the working memory." The unit is a whole completed
``subtasks`` list — its tasks with their nested lists and tool results; the parent's thought
and conclusion stay, since a task needs only the thoughts and conclusions of previous tasks
at its own or a higher level.

Pruning edits the *working memory* the graph binds (:meth:`TimPruningMemory.bind`): with a
sequence handle on a runtime with ``Capability.KV_RANGE_DROP`` the list's KV range is
dropped and only what follows is encoded again (TIMRUN's Eq. (1)); without one, the working
memory's token list changes and the next prompt is rebuilt from it (:meth:`context`). The
run graph keeps pruned nodes, marked ``pruned=True``.

The buffer ``B`` (the paper ablates 0, 1, 2; a third-party reproduction defaults to 2 —
methods.md marks that default [2nd]) is the ``buffer`` option; ``None`` turns pruning off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import Capability, ComponentSpec, Node, Prompt, SequenceHandle, hookimpl

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["PruneRecord", "TimPruningConfig", "TimPruningMemory", "WorkingMemory"]


class WorkingMemory(Protocol):
    """What the memory prunes: the TIM graph's transcript (``graphs/tim/transcript.py``)."""

    @property
    def token_ids(self) -> list[int]: ...

    async def remove(self, start: int, end: int, handle: SequenceHandle | None) -> object:
        """Remove document span ``[start, end)``; returns what the edit did."""
        ...


class TimPruningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Completed subtask lists kept in working memory (``B``); ``None``: never prune.
    buffer: int | None = Field(2, ge=0)


@dataclass(frozen=True, slots=True)
class PruneRecord:
    """One pruned subtask list: its node, and what dropping it did to the working memory."""

    node_id: str
    start: int
    end: int
    edit: object
    on_kv: bool


class TimPruningMemory:
    """The stack of completed subtask lists, and the pruning of the oldest beyond ``B``."""

    def __init__(self, config: TimPruningConfig) -> None:
        self.config = config
        self.stack: list[Node] = []
        self.pruned: list[PruneRecord] = []
        self._memory: WorkingMemory | None = None

    def bind(self, memory: WorkingMemory) -> None:
        """Attach the working memory of the run (called by the TIM graph before decoding)."""
        self._memory = memory

    async def context(self, node: Node, ctx: RunContext) -> Prompt:
        """The working memory as a prompt: the pruned lists are not in it."""
        return Prompt(token_ids=tuple(self._bound().token_ids))

    async def observe(
        self, node: Node, ctx: RunContext, handle: SequenceHandle | None = None
    ) -> None:
        """Push a completed ``subtasks`` node; prune the oldest lists above the buffer."""
        if node.kind != "subtasks" or self.config.buffer is None:
            return
        self.stack.append(node)
        while len(self.stack) > self.config.buffer:
            await self._prune(self.stack.pop(0), ctx, handle)

    async def _prune(self, node: Node, ctx: RunContext, handle: SequenceHandle | None) -> None:
        start, end = getattr(node.attrs, "start", None), getattr(node.attrs, "end", None)
        if start is None or end is None:
            raise ValueError(f"subtask list {node.id} has no document span to prune")
        capabilities = ctx.runtime(node.runtime).capabilities
        on_kv = handle is not None and Capability.KV_RANGE_DROP in capabilities
        edit = await self._bound().remove(start, end, handle if on_kv else None)
        for pruned in (node, *ctx.graph.descendants(node.id)):
            pruned.pruned = True
        self.pruned.append(PruneRecord(node.id, start, end, edit, on_kv))

    def _bound(self) -> WorkingMemory:
        if self._memory is None:
            raise RuntimeError("tim_pruning has no working memory: the TIM graph binds one")
        return self._memory


@hookimpl
def orchestrator_add_memories() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="tim_pruning",
            factory=TimPruningMemory,
            config_model=TimPruningConfig,
            description="TIM subtask pruning: keep the last B completed subtask lists",
        )
    ]
