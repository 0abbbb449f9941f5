"""``lexical``: Okapi BM25 over documents the user provides, CoAT's optional "external brain".

Scores a document ``d`` for a query ``q`` (Robertson & Zaragoza, "The Probabilistic Relevance
Framework: BM25 and Beyond", 2009) as

    sum over distinct query terms t in d of
        idf(t) · f(t, d) · (k1 + 1) / (f(t, d) + k1 · (1 − b + b · |d| / avgdl))

with ``idf(t) = ln(1 + (N − n(t) + 0.5) / (n(t) + 0.5))`` (the non-negative idf of Lucene),
``f(t, d)`` the term's count in ``d``, ``|d|`` its length in terms, ``avgdl`` the mean length,
``N`` the number of documents and ``n(t)`` how many contain ``t``. Terms are runs of word
characters (``\\w+``), lower-cased when ``lowercase``; a query term counts once however often
it repeats. ``retrieve(query, k)`` returns the ``k`` best documents with a positive score,
best first, ties in document order; ``Document.score`` is the BM25 score.

Documents come from ``documents`` (strings, or ``{"id", "text"}`` objects) and ``paths``:
a ``.jsonl`` file holds one ``{"id", "text"}`` object per line, any other file is one
document (its id is the file name), a directory contributes its files, sorted by name.

Parameters: ``k1`` (1.5), ``b`` (0.75), ``lowercase`` (True). No stemming or stop words.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, ConfigError, Document, hookimpl

__all__ = ["LexicalRetriever", "LexicalRetrieverConfig", "terms"]

_TERM = re.compile(r"\w+")


class SourceDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str


class LexicalRetrieverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[str | SourceDocument] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    k1: float = Field(1.5, ge=0.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    lowercase: bool = True


def terms(text: str, lowercase: bool = True) -> list[str]:
    return _TERM.findall(text.lower() if lowercase else text)


def _load(config: LexicalRetrieverConfig) -> list[SourceDocument]:
    docs = [
        d if isinstance(d, SourceDocument) else SourceDocument(id=f"doc{i}", text=d)
        for i, d in enumerate(config.documents)
    ]
    for raw in config.paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"no such file or directory: {raw}", field="retriever.paths")
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix == ".jsonl":
                for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                    if line.strip():
                        try:
                            docs.append(SourceDocument.model_validate(json.loads(line)))
                        except ValueError as exc:
                            raise ConfigError(
                                f"{file}:{number}: not an {{id, text}} object: {exc}",
                                field="retriever.paths",
                            ) from exc
            else:
                docs.append(SourceDocument(id=file.name, text=file.read_text(encoding="utf-8")))
    return docs


class LexicalRetriever:
    """BM25 over an in-memory index built once, when the retriever is built."""

    def __init__(self, config: LexicalRetrieverConfig) -> None:
        self.config = config
        self.documents = _load(config)
        self._counts = [Counter(terms(d.text, config.lowercase)) for d in self.documents]
        self._lengths = [sum(c.values()) for c in self._counts]
        num_docs = len(self.documents)
        self._avgdl = sum(self._lengths) / num_docs if num_docs else 0.0
        frequency: Counter[str] = Counter()
        for counts in self._counts:
            frequency.update(counts.keys())
        self._idf = {
            t: math.log(1.0 + (num_docs - n + 0.5) / (n + 0.5)) for t, n in frequency.items()
        }

    def score(self, query: str, index: int) -> float:
        """The BM25 score of document ``index`` for ``query``."""
        k1, b = self.config.k1, self.config.b
        counts, length = self._counts[index], self._lengths[index]
        norm = k1 * (1.0 - b + b * length / self._avgdl) if self._avgdl else k1
        total = 0.0
        for term in dict.fromkeys(terms(query, self.config.lowercase)):
            f = counts.get(term, 0)
            if f:
                total += self._idf[term] * f * (k1 + 1.0) / (f + norm)
        return total

    async def retrieve(self, query: str, k: int = 3) -> list[Document]:
        scored = [(self.score(query, i), i) for i in range(len(self.documents))]
        ranked = sorted((s for s in scored if s[0] > 0.0), key=lambda s: (-s[0], s[1]))
        return [
            Document(id=self.documents[i].id, text=self.documents[i].text, score=score)
            for score, i in ranked[:k]
        ]


@hookimpl
def orchestrator_add_retrievers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="lexical",
            factory=LexicalRetriever,
            config_model=LexicalRetrieverConfig,
            description="Okapi BM25 over user-provided documents (strings, files, .jsonl)",
        )
    ]
