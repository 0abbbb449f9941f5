"""Tokenization and chat rendering, with user text always treated as data.

``encode`` parses no special tokens: a prompt containing ``<|im_end|>`` gets the tokens of
those characters, never the control token, so user text cannot close a turn or forge a
role. ``render`` applies the model's own chat template (ChatML for SmolLM2) to messages
whose contents are replaced by sentinels, then tokenizes the template's text *with*
special-token parsing and each content *without*. HF tokenizes the text between special
tokens independently anyway, so for ordinary content this gives exactly
``apply_chat_template(..., tokenize=True)``, and for hostile content it stays safe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator import ConfigError, Prompt

__all__ = ["ChatTokenizer"]

_SENTINEL = "\x00orchestrator-content-{}\x00"
_SENTINEL_RE = re.compile("\x00orchestrator-content-(\\d+)\x00")


class ChatTokenizer:
    def __init__(self, directory: Path) -> None:
        from transformers import AutoTokenizer

        try:
            self.hf: Any = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no usable tokenizer in {directory}: {exc}", field="model") from exc
        # A second backend tokenizer that never matches special tokens in input text.
        raw = self.hf.backend_tokenizer
        self._data = type(raw).from_str(raw.to_str())
        self._data.encode_special_tokens = True
        self._with_specials = raw

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as data (no special-token parsing, no BOS)."""
        return list(self._data.encode(text, add_special_tokens=False).ids)

    def _encode_template(self, text: str) -> list[int]:
        return list(self._with_specials.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``, special tokens included (graphs match on tags like
        ``</Thread>`` that are special tokens)."""
        return str(self._with_specials.decode(list(token_ids), skip_special_tokens=False))

    def render(self, prompt: Prompt) -> list[int]:
        """:raises ConfigError: if ``prompt`` has messages and the model has no chat template."""
        if prompt.token_ids is not None:
            return list(prompt.token_ids)
        if prompt.text is not None:
            return self.encode(prompt.text)
        if not getattr(self.hf, "chat_template", None):
            raise ConfigError(
                "the model has no chat template: pass text or token_ids", field="prompt"
            )
        messages = prompt.messages or ()
        placeholders = [
            {"role": m.role, "content": _SENTINEL.format(i)} for i, m in enumerate(messages)
        ]
        rendered = self.hf.apply_chat_template(
            placeholders, tokenize=False, add_generation_prompt=prompt.add_generation_prompt
        )
        ids: list[int] = []
        cursor = 0
        for match in _SENTINEL_RE.finditer(rendered):
            ids += self._encode_template(rendered[cursor : match.start()])
            ids += self.encode(messages[int(match.group(1))].content)
            cursor = match.end()
        ids += self._encode_template(rendered[cursor:])
        if prompt.assistant_prefix:
            ids += self.encode(prompt.assistant_prefix)
        return ids
