"""The lexical (BM25) retriever: exact scores, ranking, sources, registration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from orchestrator.plugins.retrievers.lexical import LexicalRetriever, LexicalRetrieverConfig

from orchestrator import ConfigError, Document, Orchestrator
from orchestrator.testing import ScriptedRuntime

from .conftest import context

DOCS = ["The cat sat on the mat.", "The dog sat.", "Cats and dogs."]


def bm25_term(
    idf: float, f: int, length: int, avgdl: float, k1: float = 1.5, b: float = 0.75
) -> float:
    return idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length / avgdl))


def ranked(docs: list[Document]) -> list[tuple[str, str, float]]:
    return [(d.id, d.text, d.score) for d in docs]


async def test_scores_are_okapi_bm25_with_lucene_idf() -> None:
    retriever = LexicalRetriever(LexicalRetrieverConfig(documents=DOCS))
    rare = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))  # "cat", "mat": in one document of 3
    common = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # "the", "sat": in two
    # A repeated query term counts once; document 0 has 6 terms, the mean is 4.
    assert ranked(await retriever.retrieve("cat mat mat", k=3)) == [
        ("doc0", DOCS[0], pytest.approx(2 * bm25_term(rare, 1, 6, 4.0)))
    ]
    # Length normalisation: the short "The dog sat." beats the long sentence on "the sat".
    both = [
        ("doc1", DOCS[1], pytest.approx(2 * bm25_term(common, 1, 3, 4.0))),
        (
            "doc0",
            DOCS[0],
            pytest.approx(bm25_term(common, 2, 6, 4.0) + bm25_term(common, 1, 6, 4.0)),
        ),
    ]
    assert ranked(await retriever.retrieve("the sat", k=3)) == both
    assert ranked(await retriever.retrieve("the sat", k=1)) == both[:1]
    assert await retriever.retrieve("unicorn", k=3) == []


async def test_ties_keep_document_order_and_case_folding_is_optional() -> None:
    retriever = LexicalRetriever(LexicalRetrieverConfig(documents=["b a", "a b", "A"]))
    assert [d.id for d in await retriever.retrieve("b", k=3)] == ["doc0", "doc1"]
    strict = LexicalRetriever(LexicalRetrieverConfig(documents=["A", "a"], lowercase=False))
    assert [d.id for d in await strict.retrieve("A", k=3)] == ["doc0"]


async def test_documents_come_from_objects_files_jsonl_and_directories(tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "b.txt").write_text("Paris is the capital of France.", encoding="utf-8")
    (folder / "a.md").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    lines = [{"id": "rome", "text": "Rome is the capital of Italy."}]
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    config = LexicalRetrieverConfig(
        documents=[{"id": "madrid", "text": "Madrid is the capital of Spain."}],
        paths=[str(folder), str(tmp_path / "more.jsonl")],
    )
    retriever = LexicalRetriever(config)
    assert [d.id for d in retriever.documents] == ["madrid", "a.md", "b.txt", "rome"]
    assert [d.id for d in await retriever.retrieve("capital of Italy", k=1)] == ["rome"]


def test_bad_sources_are_config_errors_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file or directory: .*missing"):
        LexicalRetriever(LexicalRetrieverConfig(paths=[str(tmp_path / "missing")]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: not an \{id, text\} object"):
        LexicalRetriever(LexicalRetrieverConfig(paths=[str(bad)]))


async def test_registered_as_a_retriever() -> None:
    ctx = context(Orchestrator(ScriptedRuntime()))
    retriever = ctx.build("retriever", "lexical", {"documents": DOCS})
    assert [d.id for d in await retriever.retrieve("dog", 2)] == ["doc1"]
