"""Grammar-constrained decoding through xgrammar (the engine SGLang uses, so one JSON schema
behaves the same on both runtimes).

Only API shared by xgrammar 0.2.1 (the GPU machine) and current releases is used:
``TokenizerInfo.from_huggingface``, ``GrammarCompiler.compile_{json_schema,regex,grammar}``,
``GrammarMatcher.{accept_token,fill_next_token_bitmask,is_terminated}``,
``allocate_token_bitmask`` and ``apply_token_bitmask_inplace``. A matcher is rebuilt by
replaying its accepted tokens rather than with ``fork``/``rollback`` (whose signatures moved
between releases): a fork or a dropped range costs one replay, microseconds per token.
xgrammar is imported on first use: it takes a second to import, and most runs never
constrain anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from orchestrator import Grammar, RequestRejected

if TYPE_CHECKING:
    import xgrammar as xgr

__all__ = ["GrammarCompiler", "GrammarState"]

PROVIDER = "orchestrator.embedded"


class GrammarCompiler:
    """Compiles and caches grammars for one tokenizer (one per runtime)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            hf_tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._cache: dict[str, xgr.CompiledGrammar] = {}
        self.vocab_size = vocab_size

    def compile(self, grammar: Grammar) -> xgr.CompiledGrammar:
        """:raises RequestRejected: if xgrammar cannot compile the grammar, with its reason."""
        key = grammar.model_dump_json()
        if key in self._cache:
            return self._cache[key]
        try:
            if grammar.json_schema is not None:
                compiled = self._compiler.compile_json_schema(json.dumps(grammar.json_schema))
            elif grammar.regex is not None:
                compiled = self._compiler.compile_regex(grammar.regex)
            else:
                compiled = self._compiler.compile_grammar(grammar.ebnf or "")
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise RequestRejected(f"invalid grammar: {reason}", runtime=PROVIDER) from exc
        self._cache[key] = compiled
        return compiled

    def new_state(self, grammar: Grammar) -> GrammarState:
        return GrammarState(grammar, self.compile(grammar), self.vocab_size)


class GrammarState:
    """A matcher plus the tokens it accepted (to replay it after a fork or a drop)."""

    def __init__(self, grammar: Grammar, compiled: xgr.CompiledGrammar, vocab_size: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.grammar = grammar
        self._compiled = compiled
        self._vocab_size = vocab_size
        self._matcher = xgr.GrammarMatcher(compiled)
        self.accepted: list[int] = []

    @property
    def terminated(self) -> bool:
        return bool(self._matcher.is_terminated())

    def accept(self, token_id: int) -> bool:
        if not self._matcher.accept_token(token_id):
            return False
        self.accepted.append(token_id)
        return True

    def accepts(self, token_ids: Sequence[int]) -> bool:
        """Accept all of ``token_ids`` or, if one is rejected, none of them."""
        for count, token_id in enumerate(token_ids):
            if not self.accept(token_id):
                self.replay(self.accepted[: len(self.accepted) - count])
                return False
        return True

    def replay(self, token_ids: Sequence[int]) -> None:
        """Reset the matcher to the state after ``token_ids``."""
        self._matcher = self._xgr.GrammarMatcher(self._compiled)
        self.accepted = []
        if not self.accepts(list(token_ids)):
            raise ValueError("replayed tokens no longer match the grammar")

    def copy(self) -> GrammarState:
        state = GrammarState(self.grammar, self._compiled, self._vocab_size)
        state.replay(self.accepted)
        return state

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the grammar forbids next to -inf, in place. # logits: [V]"""
        bitmask = self._xgr.allocate_token_bitmask(1, self._vocab_size)
        self._matcher.fill_next_token_bitmask(bitmask, 0)
        self._xgr.apply_token_bitmask_inplace(logits.view(1, -1), bitmask.to(logits.device))
