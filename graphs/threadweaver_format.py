"""ThreadWeaver's text format and its pure parts: tags, outline parsing, thread headers, the join.

ThreadWeaver ("Adaptive Threading for Efficient Parallel Reasoning in Language Models",
arXiv 2512.07843; official controller ``ParallelBranchingController`` in
``facebookresearch/threadweaver``, ``threadweaver_rl/verl/experimental/agent_loop/
single_turn_agent_loop.py``) writes::

    <Parallel>
    <Outlines>
    <Outline> 1: what thread 1 does
    <Outline> 2: ...
    </Outlines>
    <Thread>
    1: ...</Thread><Thread>
    2: ...</Thread>
    </Parallel>

Everything here works on *response* text only (generated spans and orchestrator-inserted
text): the user's question is never parsed, so a question that contains ``</Outlines>`` or
``<Thread>`` cannot open a parallel block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "CONCLUSION_CLOSE",
    "CONCLUSION_OPEN",
    "FORCE_CLOSE",
    "OUTLINES_CLOSE",
    "OUTLINES_OPEN",
    "OUTLINE_OPEN",
    "PARALLEL_CLOSE",
    "PARALLEL_OPEN",
    "TAGS",
    "THREAD_CLOSE",
    "THREAD_OPEN",
    "BlockStats",
    "Outline",
    "TokenLatency",
    "closing_text",
    "continuation_text",
    "join_header",
    "parse_outlines",
    "prompt_header",
    "split_tags",
]

PARALLEL_OPEN, PARALLEL_CLOSE = "<Parallel>", "</Parallel>"
OUTLINES_OPEN, OUTLINES_CLOSE = "<Outlines>", "</Outlines>"
OUTLINE_OPEN, OUTLINE_CLOSE = "<Outline>", "</Outline>"
THREAD_OPEN, THREAD_CLOSE = "<Thread>", "</Thread>"
CONCLUSION_OPEN, CONCLUSION_CLOSE = "<Conclusion>", "</Conclusion>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: The tags a ThreadWeaver-trained tokenizer encodes as one special token each.
TAGS: tuple[str, ...] = (
    PARALLEL_OPEN, PARALLEL_CLOSE, OUTLINES_OPEN, OUTLINES_CLOSE, OUTLINE_OPEN, OUTLINE_CLOSE,
    THREAD_OPEN, THREAD_CLOSE, CONCLUSION_OPEN, CONCLUSION_CLOSE, THINK_OPEN, THINK_CLOSE,
)  # fmt: skip

#: The official controller's outline pattern: ``<Outline>`` + ``1`` or ``1.2`` + ``:``.
_OUTLINE = re.compile(r"<Outline>\s*([0-9]+(?:\.[0-9]+)*)\s*:")
_OUTLINE_END = re.compile(r"<Outline>|</Outline>|</Outlines>")
_TAG_SPLIT = re.compile(
    "(" + "|".join(re.escape(t) for t in sorted(TAGS, key=len, reverse=True)) + ")"
)


@dataclass(frozen=True, slots=True)
class Outline:
    """One parsed outline: its number (``"1"``, ``"1.2"``) and its text (stripped)."""

    number: str
    text: str


def parse_outlines(response: str) -> list[Outline]:
    """The outlines after the **last** ``<Outlines>`` of ``response``, deduplicated by number
    (first occurrence wins), in order. Empty when ``response`` has no ``<Outlines>``.

    The official controller searches the token ids after the last ``<Outlines>`` id of the
    whole context; here the caller passes only the response (generated + inserted text), so
    the user's question is never searched.
    """
    start = response.rfind(OUTLINES_OPEN)
    if start < 0:
        return []
    head = response[start + len(OUTLINES_OPEN) :]
    outlines: dict[str, Outline] = {}
    for match in _OUTLINE.finditer(head):
        number = match.group(1)
        if number in outlines:
            continue
        end = _OUTLINE_END.search(head, match.end())
        text = head[match.end() : end.start() if end else len(head)].strip()
        outlines[number] = Outline(number, text)
    return list(outlines.values())


def prompt_header(number: str) -> str:
    """What a thread's request appends to the context: ``"\\n<Thread>\\n" + number + ":"``."""
    return f"\n{THREAD_OPEN}\n{number}:"


def join_header(number: str, index: int) -> str:
    """A thread's header in the joined text: the first keeps its leading newline, the rest
    follow the previous ``</Thread>`` directly (``...</Thread><Thread>\\n2:...``)."""
    return prompt_header(number) if index == 0 else f"{THREAD_OPEN}\n{number}:"


#: Appended to a thread that ended by EOS or the length limit instead of ``</Thread>``.
FORCE_CLOSE = f"\n{THREAD_CLOSE}"


def continuation_text(conclusion: bool) -> str:
    """Appended after a join when every thread closed itself: back to sequential decoding.
    The public RL config runs ``no_conclusion=true`` (a bare newline)."""
    return f"\n{CONCLUSION_OPEN}\n" if conclusion else "\n"


def closing_text(conclusion: bool) -> str:
    """Appended after a join when a thread hit EOS or the length limit: the block is closed
    and the run finishes (the official controller's only ``</Parallel>`` insertion)."""
    if conclusion:
        return f"\n{CONCLUSION_OPEN}\n{CONCLUSION_CLOSE}\n{PARALLEL_CLOSE}"
    return f"\n{PARALLEL_CLOSE}"


def split_tags(text: str) -> list[str]:
    """``text`` cut into tags and the plain pieces between them (no empty pieces), so that
    orchestrator-inserted tags can be encoded as their single special-token ids."""
    return [piece for piece in _TAG_SPLIT.split(text) if piece]


@dataclass(slots=True)
class BlockStats:
    """Generated tokens of one parallel block's threads, in outline order."""

    thread_tokens: list[int] = field(default_factory=list)

    @property
    def longest(self) -> int:
        return max(self.thread_tokens, default=0)


@dataclass(slots=True)
class TokenLatency:
    """The paper's token latency: tokens on the critical path = sequential tokens + per
    block the longest thread; ``total_tokens`` counts every generated token.

    Only *decoded* tokens count: orchestrator-inserted text (thread headers, force-closes,
    the continuation newline) is prefilled, not decoded, so it adds no decode step.
    """

    sequential_tokens: int = 0
    blocks: list[BlockStats] = field(default_factory=list)

    @property
    def critical_path_tokens(self) -> int:
        return self.sequential_tokens + sum(b.longest for b in self.blocks)

    @property
    def total_tokens(self) -> int:
        return self.sequential_tokens + sum(sum(b.thread_tokens) for b in self.blocks)

    def as_meta(self) -> dict[str, object]:
        critical = self.critical_path_tokens
        return {
            "critical_path_tokens": critical,
            "total_tokens": self.total_tokens,
            "sequential_tokens": self.sequential_tokens,
            "blocks": [list(b.thread_tokens) for b in self.blocks],
            "token_latency_speedup": self.total_tokens / critical if critical else 1.0,
        }
