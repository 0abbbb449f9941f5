"""ThreadWeaver's pure parts: outline parsing, headers, the join texts, token latency."""

from __future__ import annotations

from orchestrator.graphs.threadweaver_format import (
    BlockStats,
    Outline,
    TokenLatency,
    closing_text,
    continuation_text,
    join_header,
    parse_outlines,
    prompt_header,
    split_tags,
)


def test_outlines_come_from_after_the_last_outlines_tag() -> None:
    response = (
        "<Outlines>\n<Outline> 9: old block\n</Outlines> ... "
        "<Parallel>\n<Outlines>\n<Outline> 1: add a\n<Outline>2 : add b\n</Outlines>"
    )
    assert parse_outlines(response) == [Outline("1", "add a"), Outline("2", "add b")]


def test_outline_numbers_are_deduplicated_in_order_and_may_be_dotted() -> None:
    response = (
        "<Outlines>\n<Outline> 1.2: x</Outline>\n<Outline> 1: y\n"
        "<Outline> 1.2: again\n<Outline> 3: z\n</Outlines>"
    )
    assert parse_outlines(response) == [
        Outline("1.2", "x"),
        Outline("1", "y"),
        Outline("3", "z"),
    ]


def test_no_outlines_tag_means_no_outlines() -> None:
    assert parse_outlines("<Outline> 1: a\n</Outlines>") == []
    assert parse_outlines("<Outlines>\nno numbers here\n</Outlines>") == []


def test_headers_follow_the_official_controller() -> None:
    assert prompt_header("2") == "\n<Thread>\n2:"
    assert join_header("1", 0) == "\n<Thread>\n1:"
    assert join_header("2", 1) == "<Thread>\n2:"
    assert continuation_text(False) == "\n"
    assert continuation_text(True) == "\n<Conclusion>\n"
    assert closing_text(False) == "\n</Parallel>"
    assert closing_text(True) == "\n<Conclusion>\n</Conclusion>\n</Parallel>"


def test_split_tags_keeps_every_character() -> None:
    text = "\n<Thread>\n1:</Thread><Thread>x</Outlines>"
    assert split_tags(text) == [
        "\n",
        "<Thread>",
        "\n1:",
        "</Thread>",
        "<Thread>",
        "x",
        "</Outlines>",
    ]
    assert "".join(split_tags(text)) == text


def test_token_latency_counts_the_longest_thread_of_each_block() -> None:
    latency = TokenLatency(sequential_tokens=10, blocks=[BlockStats([5, 7]), BlockStats([3])])
    assert latency.critical_path_tokens == 10 + 7 + 3
    assert latency.total_tokens == 10 + 5 + 7 + 3
    assert latency.as_meta() == {
        "critical_path_tokens": 20,
        "total_tokens": 25,
        "sequential_tokens": 10,
        "blocks": [[5, 7], [3]],
        "token_latency_speedup": 25 / 20,
    }
