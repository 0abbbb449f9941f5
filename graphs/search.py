"""The ``search`` graph: any search strategy over step-delimited generation.

Loop: the strategy selects expansions → each child is generated (one step up to the step
delimiter, or a whole solution), concurrently → the round's children are scored together →
the strategy observes them → until it is done, a budget runs out, or ``max_rounds``.

Children's prompts are token ids: the rendered question plus the exact tokens of the path,
so runtimes with prefix sharing reuse the path's KV and no text is re-tokenized (with
``context=text``, the path goes as text, for runtimes with different tokenizers; with a
memory plugin, the memory builds the prompt and observes each finished child). A path is
finished when its last step hits EOS, states a final answer (``\\boxed{}``, ``####``), or
reaches ``max_solution_tokens``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import anyio
from orchestrator.plugins.scorers.answers import extract_answer, has_final_answer
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import (
    BudgetExhausted,
    Candidate,
    ChatMessage,
    Expansion,
    GenerateRequest,
    GraphSpec,
    Node,
    NodeStatus,
    Prompt,
    SamplingParams,
    ScoreBatch,
    SearchAttrs,
    hookimpl,
)

if TYPE_CHECKING:
    from orchestrator import RunContext

DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. Separate steps with a blank line. "
    "End with the final answer as: #### <number>"
)


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_delimiter: str = "\n\n"
    max_step_tokens: int = Field(128, ge=1)
    max_solution_tokens: int = Field(384, ge=1)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_rounds: int = Field(64, ge=1)
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    #: ``chat``: the question is a user turn (ChatML); ``text``: raw completion.
    prompt_style: Literal["chat", "text"] = "chat"
    #: ``token_ids``: a child's prompt is the rendered question plus the path's exact tokens
    #: (every runtime a router may pick must share the tokenizer); ``text``: the path goes as
    #: text after the question, re-tokenized by whichever runtime writes the child (runtimes
    #: with different tokenizers, e.g. a GlimpRouter pair).
    context: Literal["token_ids", "text"] = "token_ids"
    #: Text forced at the start of every solution, after the template (e.g. a Dualformer
    #: mode token such as ``plan``); part of the prompt, not of the path.
    assistant_prefix: str = ""
    #: Request token logprobs and keep their sum on each node as ``scores["logprob"]`` (for
    #: confidence gates, e.g. the ``cascade`` graph's ``confidence`` gate).
    record_logprobs: bool = False
    default_strategy: str = "best_of_n"
    default_scorer: str = "answer_match"
    #: The memory used when the run names none (``coat``: ``associative``).
    default_memory: str | None = None


class SearchGraph:
    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self._base_ids: dict[str, list[int]] = {}

    async def run(self, ctx: RunContext) -> str | None:
        strategy = ctx.component("strategy", self.config.default_strategy)
        ctx.component("scorer", self.config.default_scorer)
        try:
            for _ in range(self.config.max_rounds):
                if strategy.done(ctx) or ctx.stopped_by is not None:
                    break
                expansions = list(strategy.select(ctx))
                if not expansions:
                    break
                children = await self._expand_round(ctx, expansions)
                await self._score(ctx, children)
                strategy.observe(ctx, children)
                self._publish(ctx, strategy)
        except BudgetExhausted as exc:
            ctx.stopped_by = exc
        return self._publish(ctx, strategy)

    def _publish(self, ctx: RunContext, strategy: object) -> str | None:
        best: Node | None = strategy.best(ctx)  # type: ignore[attr-defined]
        if best is None:
            return None
        answer = getattr(best.attrs, "answer", None)
        ctx.set_answer(answer, best)
        return answer

    async def _expand_round(self, ctx: RunContext, expansions: list[Expansion]) -> list[Node]:
        planned: list[tuple[Node, Expansion, int]] = []
        for expansion in expansions:
            for index in range(expansion.num_children):
                child = ctx.add_node("search", [expansion.node_id], SearchAttrs())
                planned.append((child, expansion, index))
        budget_hit: list[BudgetExhausted] = []
        try:
            async with anyio.create_task_group() as tg:
                for child, expansion, index in planned:
                    tg.start_soon(self._grow, ctx, child, expansion, index)
        except* BudgetExhausted as group:
            budget_hit.extend(e for e in group.exceptions if isinstance(e, BudgetExhausted))
        grown = [c for c, _, _ in planned if c.status is NodeStatus.DONE]
        if budget_hit:
            if not grown:
                raise budget_hit[0]
            ctx.stopped_by = budget_hit[0]
        return grown

    async def _grow(self, ctx: RunContext, child: Node, expansion: Expansion, index: int) -> None:
        config = self.config
        async with ctx.running(child):
            path = ctx.graph.ancestors(child.id)[1:]  # without the question
            path_ids = [t for n in path for t in n.token_ids]
            base = await self._base(ctx)
            step = expansion.until == "step"
            left = config.max_solution_tokens - len(path_ids)
            sampling = SamplingParams(
                max_new_tokens=max(1, min(config.max_step_tokens, left) if step else left),
                temperature=config.temperature,
                top_p=config.top_p,
                seed=ctx.seed_for(child.id),
                stop=(config.step_delimiter,) if step else (),
                include_stop=True,
                logprobs=config.record_logprobs,
            )
            memory = ctx.component("memory", config.default_memory)
            if memory is not None:  # the memory builds the context (e.g. a sliding window)
                prompt = await memory.context(child, ctx)
            elif config.context == "text":
                prompt = self._question_prompt(ctx, "".join(n.text for n in path))
            else:
                prompt = Prompt(token_ids=tuple(base + path_ids))
            request = GenerateRequest(prompt=prompt, sampling=sampling)
            result = await ctx.generate(child, request)
            completion = result.completions[0]
            text = "".join(n.text for n in path) + child.text
            if completion.logprobs is not None:
                child.scores["logprob"] = sum(completion.logprobs)
            if memory is not None:
                await memory.observe(child, ctx)
            attrs = child.attrs
            assert attrs is not None
            eos = (
                completion.finish_reason == "stop"
                and completion.matched_stop != config.step_delimiter
            )
            too_long = len(path_ids) + len(child.token_ids) >= config.max_solution_tokens
            attrs.finished = eos or has_final_answer(child.text) or too_long or not step
            attrs.answer = extract_answer(text) if attrs.finished else None

    async def _base(self, ctx: RunContext) -> list[int]:
        name = ctx.default_runtime
        if name not in self._base_ids:
            runtime = ctx.runtime(name)
            self._base_ids[name] = await runtime.render(self._question_prompt(ctx))
        return self._base_ids[name]

    def _question_prompt(self, ctx: RunContext, path_text: str = "") -> Prompt:
        """The question (with the system prompt), then the assistant prefix and ``path_text``."""
        prefix = self.config.assistant_prefix + path_text
        if self.config.prompt_style == "text":
            return Prompt(text=ctx.question, assistant_prefix=prefix)
        messages = [ChatMessage(role="user", content=ctx.question)]
        if self.config.system_prompt:
            messages.insert(0, ChatMessage(role="system", content=self.config.system_prompt))
        return Prompt(messages=tuple(messages), assistant_prefix=prefix)

    async def _score(self, ctx: RunContext, children: list[Node]) -> None:
        if not children:
            return
        candidates = []
        for child in children:
            path = ctx.graph.ancestors(child.id)[1:]
            text = "".join(n.text for n in path) + child.text
            finished = bool(getattr(child.attrs, "finished", False))
            candidates.append(
                Candidate(text=text, step=child.text, finished=finished, node_id=child.id)
            )
        batch = ScoreBatch(
            question=ctx.question, candidates=candidates, reference=ctx.config.reference
        )
        scorer_name = ctx.config.scorer or self.config.default_scorer
        scores = await ctx.score(batch, node=ctx.root, name=scorer_name)
        for child, score in zip(children, scores, strict=True):
            child.score = score


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="search",
            factory=SearchGraph,
            config_model=SearchConfig,
            description="a search strategy over step-delimited generation, scored per round",
        )
    ]
