"""One sample being generated: its sampling state, stop detection and outputs.

Stops: EOS (unless ``ignore_eos``) and ``stop_token_ids`` end a sample with that id as
``matched_stop``; a stop string ends it when it appears in the decoded text. Without
``include_stop`` the matched stop is cut (EOS always is, unless listed in ``stop_token_ids``):
a stop id is left out of ``token_ids``, and for a
stop string the text ends where the string starts while ``token_ids`` end before the token
in which it starts (ids never carry part of a stop; with a stop inside a token, the text
may keep that token's leading characters). Streaming emits only text that can no longer
become part of a stop string (and no half UTF-8 character), so the streamed chunks always
concatenate to the final completion, ids and text alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from orchestrator import Completion, FinishReason, SamplingParams

from .grammar import GrammarState
from .tokenizer import ChatTokenizer

if TYPE_CHECKING:
    from .sequence import Sequence

__all__ = ["Generation"]


class Generation:
    def __init__(
        self,
        params: SamplingParams,
        *,
        generator: torch.Generator,
        tokenizer: ChatTokenizer,
        eos_token_ids: tuple[int, ...],
        grammar: GrammarState | None = None,
    ) -> None:
        self.params = params
        self.generator = generator
        self.grammar = grammar
        self._tokenizer = tokenizer
        self._stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            self._stop_ids.update(eos_token_ids)
        self.output_ids: list[int] = []
        self.logprobs: list[float] = []
        self.top_logprobs: list[dict[int, float]] = []
        self.entropies: list[float] = []
        self.finish_reason: FinishReason | None = "length" if params.max_new_tokens == 0 else None
        self.matched_stop: str | int | None = None
        self._stop_at: int | None = None  # char index of a matched stop string
        self._checked = 0  # text length already searched for stop strings
        self._emitted_ids = 0
        self._emitted_text = ""
        #: The sequence generating this sample (a fan-out moves it to a fork).
        self.seq: Sequence | None = None
        self.error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def abort(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "abort"

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.abort()

    def append(self, token_id: int, logprob: float, top: dict[int, float], entropy: float) -> None:
        """Record a sampled token and decide whether the sample is finished."""
        self.output_ids.append(token_id)
        self.logprobs.append(logprob)
        self.top_logprobs.append(top)
        self.entropies.append(entropy)
        if token_id in self._stop_ids:
            self.finish_reason, self.matched_stop = "stop", token_id
            return
        if self.params.stop:
            text = self._tokenizer.decode(self.output_ids)
            longest = max(len(s) for s in self.params.stop)
            found = [
                (at, s)
                for s in self.params.stop
                if (at := text.find(s, max(0, self._checked - longest))) >= 0
            ]
            self._checked = len(text)
            if found:
                self._stop_at, self.matched_stop = min(found)
                self.finish_reason = "stop"
                return
        if len(self.output_ids) >= self.params.max_new_tokens:
            self.finish_reason = "length"

    def _kept(self) -> tuple[int, str]:
        """How many ids and which text the completion keeps."""
        ids = self.output_ids
        if isinstance(self.matched_stop, int) and not (
            # EOS is kept only when asked for as a stop token (the protocol's include_stop).
            self.params.include_stop and self.matched_stop in self.params.stop_token_ids
        ):
            return len(ids) - 1, self._tokenizer.decode(ids[:-1])
        if self._stop_at is None:
            return len(ids), self._tokenizer.decode(ids)
        if self.params.include_stop:
            text = self._tokenizer.decode(ids)
            return len(ids), text[: self._stop_at + len(str(self.matched_stop))]
        count = 0
        while count < len(ids) and len(self._tokenizer.decode(ids[: count + 1])) <= self._stop_at:
            count += 1
        return count, self._tokenizer.decode(ids)[: self._stop_at]

    def completion(self) -> Completion:
        count, text = self._kept()
        params = self.params
        return Completion(
            text=text,
            token_ids=self.output_ids[:count],
            finish_reason=self.finish_reason or "abort",
            matched_stop=self.matched_stop,
            logprobs=self.logprobs[:count] if params.logprobs else None,
            top_logprobs=self.top_logprobs[:count] if params.top_logprobs else None,
            entropies=self.entropies[:count] if params.return_entropy else None,
        )

    def _unsafe(self, text: str) -> bool:
        if text.endswith("\ufffd"):
            return True
        return any(text.endswith(s[:i]) for s in self.params.stop for i in range(1, len(s)))

    def stream_delta(self) -> tuple[list[int], str]:
        """Ids and text not streamed yet that are final (everything once finished)."""
        if self.finished:
            count, text = self._kept()
        else:
            count = len(self.output_ids)
            text = self._tokenizer.decode(self.output_ids[:count])
            while count > self._emitted_ids and self._unsafe(text):
                count -= 1
                text = self._tokenizer.decode(self.output_ids[:count])
        if count <= self._emitted_ids and len(text) <= len(self._emitted_text):
            return [], ""
        ids = self.output_ids[self._emitted_ids : count]
        delta = text[len(self._emitted_text) :]
        self._emitted_ids, self._emitted_text = max(count, self._emitted_ids), text
        return ids, delta
