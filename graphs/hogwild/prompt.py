"""Hogwild! text: the collaboration prompt, the cache headers, step prefixes, the step-boundary
rule, the self-check prompt, the finisher and answer parsing.

After ``eqimp/hogwild_llm`` @ ``1a87a99`` (``formatting.py``, ``MathFormatting``; methods.md
§3): the rules are the reference's ``second_person`` variant and its "How to collaborate"
list, passed as part of the user message (``pass_system_prompt_as_user_message``), followed by
the problem. The reference's few-shot examples are left out, as in the ``inference_lib``
branch's default (``add_examples=False``).

Generalised beyond the reference's two workers [unverified, parameters]: names past
Alice and Bob come from ``worker_names``; every worker after the first is seeded like Bob
(``Hi, I'm <Name>.``); with more than two workers the other workers' steps are separated by
the pivot line ``"<...>\\n\\n"`` that ends the last one in the reference's own header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from orchestrator.plugins.scorers.answers import normalize_answer

__all__ = [
    "END_OF_STEP_CHARS",
    "FINISHER_SUFFIX",
    "OTHERS_HEADER",
    "OWN_HEADER",
    "PIVOT",
    "SELF_CHECK",
    "SEP",
    "collaboration_prompt",
    "final_answer",
    "is_end_of_step",
    "seed_text",
    "step_prefix",
]

SEP = "\n\n"
PIVOT = "<...>"
HISTORY_TITLE = "### Past steps"
OTHERS_TITLE = "### Work in progress (others)"
OWN_TITLE = "### Work in progress (own)"
#: Between the common history and the other workers' current steps.
OTHERS_HEADER = SEP + OTHERS_TITLE + SEP
#: Between the other workers' current steps and the worker's own.
OWN_HEADER = PIVOT + SEP + OWN_TITLE + SEP
#: The s1-style collaboration nudge, appended to a step prefix.
SELF_CHECK = "Quick check: am I doing redundant work? (yes/no): "
FINISHER_SUFFIX = (
    SEP + "Wait, given the limited time, I have to give an answer right now. "
    "Considering all my previous attempts, I have to conclude that the final answer is \\boxed{"
)
#: A step ends at a token containing SEP when the text before it ends with one of these.
END_OF_STEP_CHARS = (
    ".", "?", "!", "。", "۔", "؟", "।", "॥", "…", "‽", "།", "᠃", "։", "჻", "¶", "❧",
)  # fmt: skip
BOXED = "\\boxed{"


def step_prefix(name: str, index: int | str) -> str:
    """``**Alice [3]:** ``: the header that opens a worker's step."""
    return f"**{name} [{index}]:** "


def seed_text(names: Sequence[str], worker: int) -> str:
    """The first step's forced opening: the first worker proposes a plan, the others greet."""
    name = names[worker]
    opening = f"Hi, I'm {name}. Here's how we can" if worker == 0 else f"Hi, I'm {name}."
    return step_prefix(name, 1) + opening


def _listing(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _rules(names: Sequence[str]) -> str:
    others = "another assistant" if len(names) == 2 else "other assistants"
    everyone = _listing(names)
    return f"""You will collaborate on this problem with {others}. You will write your thoughts simultaneously with them and collaborate without redundant work. You can collaborate by doing different parts of the problem, double-checking each other's results, trying different approaches, or any other means.

There are {len(names)} assistants, including yourself. You will refer to each other as {everyone}.

You will solve the problem together, writing your thoughts in parallel. You will be able to see each other's past and current thoughts as we write them. You will see each other's previous steps as {step_prefix("AssistantName", "step")}{PIVOT} .

In the '{HISTORY_TITLE}' section, the automated system will gather the thoughts of {everyone} as you write them.

After the '{OTHERS_TITLE}' section, you will see the other assistants' unfinished steps. They will write those steps concurrently with you. You will take into account what they are doing. If another assistant gives you suggestions, you should address them.

You will always see *other* assistants' incomplete thoughts first, and then, after '{OWN_TITLE}', your own current step. Other assistants will continue writing their thoughts in the background while you will continue writing your own.

Since you and others both write your thoughts in parallel, you will initially see only partial (unfinished) thoughts that others will continue in parallel, while you write yours. Others' thoughts will appear at the end of their unfinished step, near {PIVOT}. Other assistants may write new thoughts while you are writing yours.

You will use these partial thoughts to decide how best to collaborate without doing the same work twice. You will periodically check what other assistants are doing and you should adjust your actions based on what they are doing so you collaborate efficiently with them.

If what you are currently doing is the same thing that another assistant has already done or is in process of doing, you will stop (e.g. {names[0]} may say 'Wait, I was doing the same as {names[1]} ...') and change to a different task right away, so as to avoid doing redundant work.

When you are done with the problem, any one of you ({everyone}) can return the **final** answer as {BOXED}answer here}} , after which, you will no longer be able to update it."""  # noqa: E501


def _suggestions(names: Sequence[str]) -> str:
    first, second = names[0], names[1]
    return f"""You will take into account what the other assistant is doing and change your actions accordingly. Here is how you can collaborate with them:

- **1. Strategizing:** you should think on how best to divide work between us (e.g. if {first} writes: {second}, please do this, then {second} should take this into account). If assistants disagree about what to do, you should both default to {first}'s version.
- **2. Splitting:** you can split the problem into subtasks (simplify one equation or the other equation) and split the tasks between us. Prioritize subtasks that are not redundant (i.e. do not verify minor calculation done by another worker if there is another calculation that wasn't attempted yet).
- **3. Alternatives:** you can each try to solve a problem with different methods (e.g. calculate a mathematical expression with brute force vs mathematical derivations) and see which approach is faster.
- **4. Communicating:** you can look at each other's thoughts, ask each other questions (e.g. '{first}, which of these should I do first?'), give each other suggestions or corrections (e.g. 'Hey, {second}! You have a mistake in step 3 ...')
- **5. Announcing:** you can announce what you will do next (e.g. 'Let me try x=5 next' or 'I will double-check {first}'s result from step 5'). If another assistant says this, you should take it into consideration to avoid redundancy.
- **6. Reacting:** if you notice that another assistant is doing the same thing as you do, you should stop and think what else can you do to avoid redundancy. If you are ahead of the other assistant, you will instead ask them to change task problem (e.g. '{second}, please do something else, I am already solving that').
- **7. Pivoting:** if you notice that what you are doing is no longer useful after change in circumstances, you will stop mid-sentence and pivot to another direction (e.g. '... computing p^4 | Wait, {first} is already on it, I should switch to adding up the results.')

You can also collaborate in any different way. You can invent new ways that would help you arrive at the correct solution faster together.

To decide how best to collaborate, you will periodically, every few steps or more often, think what you are doing and if you are contributing or doing redundant work. If it is the latter, you will stop and do something else to better contribute to solving the problem together."""  # noqa: E501


def collaboration_prompt(names: Sequence[str], *, suggestions: bool = True) -> str:
    """The reference's system text ("Collaborative Reasoning"); the problem follows it."""
    parts = ["# Collaborative Reasoning", _rules(names)]
    if suggestions:
        parts += ["# How to collaborate", _suggestions(names)]
    parts += [
        "# Solve the following problem",
        f"{_listing(names)}, you will now solve the next problem together. Keep track of who "
        "does what work and communicate to avoid doing the same work twice.",
    ]
    return SEP.join(parts)


def is_end_of_step(step_text: str, last_token_text: str, *, by_text: bool = False) -> bool:
    """The reference's step-boundary rule: the newest token contains the separator and the
    step's text before its last separator, stripped, ends with sentence punctuation.

    ``by_text``: the newest token *completes* a separator at the end of the text instead
    (for tokenizers that write ``"\n\n"`` as two ``"\n"`` tokens, as SmolLM2's does after
    punctuation; the reference's rule never fires there)."""
    if by_text:
        if not last_token_text or not step_text.endswith(SEP):
            return False
    elif SEP not in last_token_text or SEP not in step_text:
        return False
    before = step_text[: step_text.rindex(SEP)].strip()
    return before.endswith(END_OF_STEP_CHARS)


_BOXED_START = re.compile(re.escape(BOXED))


def final_answer(text: str, *, numeric: bool = False) -> str | None:
    """The last valid ``\\boxed{...}`` in ``text`` (braces balanced), normalised; None when
    there is none. Valid: non-empty, and a number when ``numeric`` (the reference's
    ``MathFormatting`` parses it with ``float``, so the prompt's own ``\\boxed{answer
    here}`` is no answer). The reference takes the text up to the first ``}``, which cuts
    answers such as ``\\frac{1}{2}``; balancing the braces is our choice."""
    for match in reversed(list(_BOXED_START.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    inner = normalize_answer(text[start:i].strip())
                    if inner and (not numeric or _is_number(inner)):
                        return inner
                    break
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
