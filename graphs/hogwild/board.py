"""The collaboration's text state and the reference's per-token bookkeeping.

Both cache modes share it: which step each worker is on, the tokens of every current step,
the common history in the order steps finished, and the one self-check counter over all
workers. :meth:`Board.settle` applies the reference's loop body (``generation.py``,
``generate_reasoning_2agents``) to one worker's new tokens, workers taken in order:

- the token joins the worker's current step;
- at a step boundary (:func:`~.prompt.is_end_of_step`) the step moves into the history, the
  step index grows, and the next step opens with ``**Name [k]:** ``, plus the self-check
  prompt when *more than* ``self_check_every`` tokens were fed since the last one (the
  counter then restarts at 0);
- the counter grows by the tokens fed to the next forward: the new token, and at a boundary
  the new step's opening too.

A finished step with a ``\\boxed{}`` answer, or an EOS, ends the collaboration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .prompt import SELF_CHECK, final_answer, is_end_of_step, step_prefix

__all__ = ["Board", "FinishedStep", "Opening"]


@dataclasses.dataclass(slots=True)
class FinishedStep:
    """A step in the common history: ``token_ids`` from its opening to its last token."""

    worker: int
    index: int
    token_ids: list[int]
    text: str
    node_id: str | None = None


@dataclasses.dataclass(slots=True)
class Opening:
    """What opens a worker's next step: its text (``**Bob [2]:** ``, maybe the self-check)
    and whether the self-check prompt is part of it."""

    worker: int
    index: int
    text: str
    self_check: bool


class Board:
    def __init__(
        self,
        names: Sequence[str],
        self_check_every: int,
        *,
        boundary_by_text: bool = False,
        numeric_answer: bool = False,
    ) -> None:
        self.names = tuple(names)
        self.self_check_every = self_check_every
        self.boundary_by_text = boundary_by_text
        self.numeric_answer = numeric_answer
        self.step_index = [1] * len(names)
        #: Each worker's current step: opening + generated tokens, and its text.
        self.current: list[list[int]] = [[] for _ in names]
        self.current_text: list[str] = ["" for _ in names]
        self.history: list[FinishedStep] = []
        #: Tokens fed since the last self-check prompt (all workers).
        self.since_check = 0
        self.num_self_checks = 0
        #: Why the collaboration ended (``answer``, ``eos``...); None while it goes on.
        self.finished: str | None = None

    def open(self, worker: int, token_ids: Sequence[int], text: str) -> None:
        """Start the worker's current step with its (already tokenized) opening."""
        self.current[worker] = list(token_ids)
        self.current_text[worker] = text

    def settle(
        self, worker: int, token_ids: Sequence[int], text: str, *, boundary_token: str, eos: bool
    ) -> Opening | None:
        """Take one worker's new tokens (one per lockstep step; up to ``k`` in the
        fallback). ``boundary_token`` is the text of the last one (checked for the separator).
        Returns the next step's opening if the step ended (and did not end the
        collaboration); call :meth:`fed` after tokenizing it."""
        self.current[worker].extend(token_ids)
        self.current_text[worker] += text
        if eos:
            self.finished = self.finished or "eos"
        # Earlier tokens of a multi-token round were fed before this one was sampled.
        self.since_check += max(0, len(token_ids) - 1)
        ended = is_end_of_step(
            self.current_text[worker], boundary_token, by_text=self.boundary_by_text
        )
        if not token_ids or not ended:
            if token_ids:
                self.since_check += 1
            return None
        step = FinishedStep(
            worker,
            self.step_index[worker],
            self.current[worker],
            self.current_text[worker],
        )
        self.history.append(step)
        self.current[worker], self.current_text[worker] = [], ""
        if final_answer(step.text, numeric=self.numeric_answer) is not None:
            self.finished = self.finished or "answer"
            return None  # the collaboration is over: no next step to open
        self.step_index[worker] += 1
        index = self.step_index[worker]
        text = step_prefix(self.names[worker], index)
        check = self.since_check > self.self_check_every
        if check:
            text += SELF_CHECK
            self.since_check = 0
            self.num_self_checks += 1
        return Opening(worker, index, text, check)

    def fed(self, num_tokens: int) -> None:
        """Count the tokens a boundary feeds the next forward (new token + opening)."""
        self.since_check += num_tokens

    def generated_text(self) -> str:
        """The history and the current steps: where a final answer may be stated (the
        prompt, and so the user's question, is never searched)."""
        return "".join(s.text for s in self.history) + "".join(self.current_text)
