"""The token pieces of the shared cache, and the views linearised as token ids.

Worker ``w`` reads (the reference's "combined" layout, methods.md §3a): the common prompt and
history → ``OTHERS_HEADER`` → each other worker's current step (in worker order, separated by
``PIVOT + SEP``) → ``OWN_HEADER`` → its own current step. Every piece is tokenized on its own,
as the reference fills one cache block per piece; the question is rendered inside the user
turn, so it stays data: nothing it contains becomes a header, a worker or a chat turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator import ChatMessage, Prompt

from .board import Board
from .prompt import FINISHER_SUFFIX, OTHERS_HEADER, OWN_HEADER, PIVOT, SEP, collaboration_prompt

if TYPE_CHECKING:
    from orchestrator import Runtime

__all__ = ["Pieces", "combined_view", "finisher_prompt", "others_order"]


@dataclasses.dataclass(frozen=True, slots=True)
class Pieces:
    prompt: tuple[int, ...]
    others_header: tuple[int, ...]
    own_header: tuple[int, ...]
    pivot: tuple[int, ...]
    finisher: tuple[int, ...]

    @classmethod
    async def build(
        cls, runtime: Runtime, question: str, names: Sequence[str], *, suggestions: bool
    ) -> Pieces:
        """The prompt is one user turn: the collaboration rules, a blank line, the problem
        (the reference's ``pass_system_prompt_as_user_message``)."""
        content = collaboration_prompt(names, suggestions=suggestions) + SEP + question
        prompt = Prompt(messages=(ChatMessage(role="user", content=content),))
        return cls(
            prompt=tuple(await runtime.render(prompt)),
            others_header=tuple(await runtime.tokenize(OTHERS_HEADER)),
            own_header=tuple(await runtime.tokenize(OWN_HEADER)),
            pivot=tuple(await runtime.tokenize(PIVOT + SEP)),
            finisher=tuple(await runtime.tokenize(FINISHER_SUFFIX)),
        )


def others_order(num_workers: int, worker: int) -> list[int]:
    """The other workers, in worker order (the reference has one other worker)."""
    return [v for v in range(num_workers) if v != worker]


def combined_view(pieces: Pieces, board: Board, worker: int) -> list[int]:
    """Worker ``worker``'s view as one token sequence (the fallback's prompt)."""
    ids = [*pieces.prompt]
    for step in board.history:
        ids.extend(step.token_ids)
    ids.extend(pieces.others_header)
    others = others_order(len(board.names), worker)
    for i, other in enumerate(others):
        ids.extend(board.current[other])
        ids.extend(pieces.own_header if i == len(others) - 1 else pieces.pivot)
    ids.extend(board.current[worker])
    return ids


def finisher_prompt(pieces: Pieces, board: Board) -> list[int]:
    """Prompt, history, every current step closed by the pivot, then the s1 finisher
    (the reference's ``compile_response_with_s1_finisher``)."""
    ids = [*pieces.prompt]
    for step in board.history:
        ids.extend(step.token_ids)
    ids.extend(pieces.others_header)
    for current in board.current:
        ids.extend(current)
        ids.extend(pieces.pivot)
    ids.extend(pieces.finisher)
    return ids
