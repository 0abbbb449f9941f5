"""LLM-as-a-judge as a process reward: the probability that a judge model answers "Yes".

The generative-verifier reading of a PRM (Zheng et al., 2023, "Judging LLM-as-a-Judge with
MT-Bench and Chatbot Arena", arXiv 2306.05685; Zhang et al., 2024, "Generative Verifiers",
arXiv 2408.15240): ask a model whether the solution so far is correct and read the
probability of the token "Yes" instead of sampling a verdict. Works on any runtime, through
``Runtime.score`` (teacher-forced log-probabilities of the continuations ``yes`` and ``no``
after the judge prompt), so a served judge or the policy model itself plugs in the same way.

Parameters:

- ``runtime``: the orchestrator runtime that judges (default: the run's default runtime).
- ``template``: the judge's user turn, with ``{question}``, ``{solution}`` (the path so
  far) and ``{step}`` (the newest step) placeholders.
- ``yes`` / ``no`` (``"Yes"`` / ``"No"``): the verdict continuations.
- ``normalize`` (default True): score ``P(yes) / (P(yes) + P(no))``, so the mass the judge
  puts on other tokens does not count; False gives the raw ``P(yes)``.
- ``prompt_style``: ``chat`` (the template is a user turn, the verdict opens the assistant
  turn) or ``text`` (raw completion, the verdict on the line after the template).

Selecting one of k judged candidates by a softmax at a temperature, rather than the argmax,
is :func:`orchestrator.plugins.search.weights.softmax_select` (best-of-N's
``selection="softmax"``). Unspecified by the sources, chosen here: the default template
wording, and that each candidate is one judge request.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from orchestrator import ChatMessage, ComponentSpec, Prompt, ScoreBatch, ScoreRequest, hookimpl

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["DEFAULT_TEMPLATE", "LLMJudge", "LLMJudgeConfig"]

DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nProposed solution (it may be unfinished):\n{solution}\n\n"
    "Is every step of this solution correct so far? Answer Yes or No."
)


class LLMJudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime: str | None = None
    template: str = DEFAULT_TEMPLATE
    yes: str = "Yes"
    no: str = "No"
    normalize: bool = True
    prompt_style: Literal["chat", "text"] = "chat"


class LLMJudge:
    def __init__(self, config: LLMJudgeConfig) -> None:
        self.config = config

    def prompt(self, question: str, solution: str, step: str) -> Prompt:
        """The judge prompt for one candidate."""
        content = self.config.template.format(question=question, solution=solution, step=step)
        if self.config.prompt_style == "chat":
            return Prompt(messages=(ChatMessage(role="user", content=content),))
        return Prompt(text=content + "\n")

    async def score(self, batch: ScoreBatch, ctx: RunContext) -> list[float]:
        config = self.config
        requests = [
            ScoreRequest(
                prompt=self.prompt(batch.question, c.text, c.step or c.text),
                continuations=(config.yes, config.no),
            )
            for c in batch.candidates
        ]
        results = await ctx.runtime(config.runtime).score(requests)
        scores = []
        for result in results:
            yes, no = result.logprobs
            if config.normalize:
                # P(yes) / (P(yes) + P(no)) = sigmoid(logp_yes - logp_no), stable for any gap.
                scores.append(1.0 / (1.0 + math.exp(min(700.0, no - yes))))
            else:
                scores.append(math.exp(yes))
        return scores


@hookimpl
def orchestrator_add_scorers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="llm_judge",
            factory=LLMJudge,
            config_model=LLMJudgeConfig,
            description='probability that a judge model answers "Yes" (any runtime\'s score)',
        )
    ]
