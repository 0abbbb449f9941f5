"""An incremental JSON parser that reports where every value starts and ends.

TIM parses its output while it streams (TIMRUN's "structure checker"): the run graph grows a
node when a field's key appears, a tool runs as soon as its ``parameters`` close, a subtask
list is pushed on the pruning stack when it closes. This parser consumes text in pieces of
any size and returns, per piece, the events it completed, each with offsets into the whole
document. Values themselves are read back from the document with :func:`json.loads` on the
event's span, so the parser only tracks structure.

Paths are tuples of keys and indices: ``("reasoning", 0, "subtasks", 1, "thought")``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["JsonEvent", "JsonStream", "JsonStreamError", "Path"]

Path = tuple[str | int, ...]
ValueKind = Literal["object", "array", "string", "number", "literal"]
_WS = " \t\n\r"
_NUMBER = set("+-0123456789.eE")
_LITERAL = set("truefalsn")


class JsonStreamError(ValueError):
    """Raised when the text stops being JSON; ``offset`` is where."""

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(f"{message} at offset {offset}")


@dataclass(frozen=True, slots=True)
class JsonEvent:
    """``start``/``end`` of a value at ``path`` (``end`` exclusive), or ``key``: a member's key
    string closed (``path`` is the member's path; ``start`` is where the member begins —
    right after the previous member's value, so the comma before it belongs to the member —
    and ``end`` is just past the key's closing quote)."""

    type: Literal["start", "end", "key"]
    path: Path
    kind: ValueKind | None
    start: int
    end: int | None = None


@dataclass(slots=True)
class _Frame:
    kind: Literal["object", "array"]
    path: Path
    start: int
    #: object: "key" | "colon" | "value" | "comma"; array: "value" | "comma"
    expect: str
    index: int = 0
    key: str | None = None
    member_start: int = 0
    #: "[" or "{" just opened: a close is allowed instead of the first value/key
    empty: bool = True


@dataclass(slots=True)
class JsonStream:
    """Feed text with :meth:`feed`; ``done`` once the root value closed."""

    offset: int = 0
    done: bool = False
    #: Text fed after the document ended; not parsed.
    trailing: str = ""
    _stack: list[_Frame] = field(default_factory=list)
    _started: bool = False
    # the scalar (or key) being read: kind, start offset, path, raw text so far
    _scalar: tuple[ValueKind | Literal["key"], int, Path] | None = None
    _raw: list[str] = field(default_factory=list)
    _escape: bool = False

    def feed(self, text: str) -> list[JsonEvent]:
        """Consume ``text``; the events completed by it, in order.

        :raises JsonStreamError: at the first character that cannot continue the JSON.
        """
        events: list[JsonEvent] = []
        for i, char in enumerate(text):
            if self.done and self._scalar is None and char not in _WS:
                self.trailing += text[i:]  # after the document (an EOS token's text)
                break
            self._char(char, events)
            self.offset += 1
        return events

    # -- the state machine -----------------------------------------------------------------

    def _char(self, char: str, events: list[JsonEvent]) -> None:
        if self._scalar is not None and self._in_scalar(char, events):
            return
        if char in _WS:
            return
        frame = self._stack[-1] if self._stack else None
        if frame is None:
            if self._started:
                raise JsonStreamError(f"unexpected {char!r}", self.offset)
            self._started = True
            self._value(char, (), events)
        elif frame.kind == "object":
            self._in_object(frame, char, events)
        else:
            self._in_array(frame, char, events)

    def _in_object(self, frame: _Frame, char: str, events: list[JsonEvent]) -> None:
        if char == "}" and (frame.expect == "comma" or (frame.expect == "key" and frame.empty)):
            self._close(events)
        elif frame.expect == "key" and char == '"':
            self._scalar, self._raw = ("key", self.offset, frame.path), ['"']
        elif frame.expect == "colon" and char == ":":
            frame.expect = "value"
        elif frame.expect == "value":
            assert frame.key is not None
            frame.expect = "comma"
            self._value(char, (*frame.path, frame.key), events)
        elif frame.expect == "comma" and char == ",":
            frame.expect, frame.empty = "key", False
        else:
            raise JsonStreamError(f"unexpected {char!r} in an object", self.offset)

    def _in_array(self, frame: _Frame, char: str, events: list[JsonEvent]) -> None:
        if char == "]" and (frame.expect == "comma" or frame.empty):
            self._close(events)
        elif frame.expect == "value":
            frame.expect, frame.empty = "comma", False
            self._value(char, (*frame.path, frame.index), events)
        elif frame.expect == "comma" and char == ",":
            frame.expect = "value"
            frame.index += 1
        else:
            raise JsonStreamError(f"unexpected {char!r} in an array", self.offset)

    def _value(self, char: str, path: Path, events: list[JsonEvent]) -> None:
        start = self.offset
        if char in "{[":
            kind: Literal["object", "array"] = "object" if char == "{" else "array"
            expect = "key" if kind == "object" else "value"
            self._stack.append(_Frame(kind, path, start, expect, member_start=start + 1))
            events.append(JsonEvent("start", path, kind, start))
            return
        if char == '"':
            kind_s: ValueKind = "string"
        elif char in _NUMBER:
            kind_s = "number"
        elif char in "tfn":
            kind_s = "literal"
        else:
            raise JsonStreamError(f"unexpected {char!r} where a value starts", start)
        events.append(JsonEvent("start", path, kind_s, start))
        self._scalar, self._raw, self._escape = (kind_s, start, path), [char], False

    def _in_scalar(self, char: str, events: list[JsonEvent]) -> bool:
        """Consume ``char`` as part of the current scalar; False if it ends the scalar
        without belonging to it (numbers and literals end at the next delimiter)."""
        assert self._scalar is not None
        kind, start, path = self._scalar
        if kind in ("string", "key"):
            self._raw.append(char)
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._scalar = None
                self._end_string(kind, start, path, events)
            elif char < " ":
                raise JsonStreamError("control character in a string", self.offset)
            return True
        if (kind == "number" and char in _NUMBER) or (kind == "literal" and char in _LITERAL):
            self._raw.append(char)
            return True
        assert kind in ("number", "literal")
        raw = "".join(self._raw)
        if kind == "literal" and raw not in ("true", "false", "null"):
            raise JsonStreamError(f"bad literal {raw!r}", start)
        self._scalar = None
        self._end_value(path, kind, start, self.offset, events)
        return False

    def _end_string(
        self, kind: ValueKind | Literal["key"], start: int, path: Path, events: list[JsonEvent]
    ) -> None:
        end = self.offset + 1
        if kind == "key":
            frame = self._stack[-1]
            frame.key = json.loads("".join(self._raw))
            frame.expect = "colon"
            assert frame.key is not None
            events.append(JsonEvent("key", (*path, frame.key), None, frame.member_start, end))
            return
        self._end_value(path, "string", start, end, events)

    def _end_value(
        self, path: Path, kind: ValueKind, start: int, end: int, events: list[JsonEvent]
    ) -> None:
        events.append(JsonEvent("end", path, kind, start, end))
        if self._stack:
            self._stack[-1].member_start = end
        else:
            self.done = True

    def _close(self, events: list[JsonEvent]) -> None:
        frame = self._stack.pop()
        self._end_value(frame.path, frame.kind, frame.start, self.offset + 1, events)

    def finish(self) -> list[JsonEvent]:
        """End of input: a pending number or literal at the root closes."""
        if self._scalar is not None and self._scalar[0] in ("number", "literal"):
            events: list[JsonEvent] = []
            self._in_scalar(" ", events)
            return events
        return []
