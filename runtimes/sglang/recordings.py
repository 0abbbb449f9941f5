"""Exchanges recorded from a real SGLang server, and how a live request matches one.

A recording (one JSON file of the GPU kit's ``record.py``) holds the request (method, path,
body), the status, the content type, and the answer as JSON, text or server-sent-event
lines. :class:`.replay.ReplayServer` serves them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["Recording", "bodies_match", "load_recordings"]

_MISSING = object()


@dataclass(frozen=True)
class Recording:
    """One recorded exchange (the JSON files of ``record.py``)."""

    name: str
    method: str
    path: str
    body: Any
    status: int
    content_type: str | None = None
    json_body: Any = _MISSING
    text: str | None = None
    sse_lines: tuple[str, ...] | None = None
    sglang_version: str | None = None

    @classmethod
    def from_file(cls, path: Path) -> Recording:
        data = json.loads(path.read_text())
        request = data["request"]
        return cls(
            name=path.stem,
            method=request["method"],
            path=request["path"],
            body=request["body"],
            status=data["status"],
            content_type=data.get("content_type"),
            json_body=data.get("json", _MISSING),
            text=data.get("text"),
            sse_lines=tuple(data["sse_lines"]) if "sse_lines" in data else None,
            sglang_version=data.get("sglang_version"),
        )

    @property
    def has_json(self) -> bool:
        return self.json_body is not _MISSING

    @property
    def response_json(self) -> Any:
        """The recorded JSON answer (:class:`KeyError` if the answer was not JSON)."""
        if self.json_body is _MISSING:
            raise KeyError(f"recording {self.name!r} has no JSON answer")
        return self.json_body

    def with_body(self, body: Any, *, name: str | None = None) -> Recording:
        """The same answer to another request body (e.g. an abort of another rid, which
        0.5.17 answers identically: 200, empty body)."""
        return replace(self, body=body, name=name or f"{self.name} (body {body!r})")


def load_recordings(directory: Path) -> dict[str, Recording]:
    """Every ``*.json`` recording in ``directory`` (``INDEX.json`` excepted), by name."""
    return {
        path.stem: Recording.from_file(path)
        for path in sorted(directory.glob("*.json"))
        if path.name != "INDEX.json"
    }


def bodies_match(recorded: Any, live: Any) -> bool:
    """Exact JSON equality, ``rid`` aside (see the module docstring)."""
    if isinstance(recorded, Mapping) and isinstance(live, Mapping):
        live_keys = set(live) - ({"rid"} if "rid" not in recorded else set())
        if set(recorded) != live_keys:
            return False
        return all(_equal(recorded[k], live[k]) for k in recorded)
    return _equal(recorded, live)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b
