"""SGLang's output dicts as the core's :class:`~orchestrator.Completion` and usage.

What SGLang 0.5.17 returns (recorded) and how it maps:

- ``finish_reason``: ``{"type": "stop", "matched": 2}`` (a stop id or the EOS),
  ``{"type": "stop", "matched": "."}`` (a stop string), ``{"type": "length", ...}``,
  ``{"type": "abort", "message": "Aborted"}``. ``matched`` becomes ``matched_stop``.
- ``output_ids`` keep a matched stop token at the end (``generate_json_schema`` ends with the
  EOS, 2) while ``text`` drops it; and a matched stop *string* is cut from ``text`` only. The
  core's contract is that ids and text both end before the stop unless ``include_stop``
  (sent as ``no_stop_trim``), so the ids are trimmed here to match the text.
- ``meta_info.output_token_logprobs`` are ``[logprob, id, text-or-null]`` triples and
  ``output_top_logprobs`` one list of triples per position.
- Entropy: SGLang returns no full distribution, so it is approximated from the top-k
  logprobs as a lower bound, the tail mass lumped into one outcome (hence no
  ``Capability.EXACT_ENTROPY``).
- Usage: ``prompt_tokens``, ``cached_tokens``, ``completion_tokens`` from ``meta_info``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator import Completion, FinishReason, GenerationChunk, SamplingParams, Usage

__all__ = ["StreamAssembler", "approx_entropy", "completion_from_output", "usage_from_meta"]

Decode = Callable[[Sequence[int]], str]


def usage_from_meta(meta: Mapping[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(meta.get("prompt_tokens") or 0),
        cached_tokens=int(meta.get("cached_tokens") or 0),
        generated_tokens=int(meta.get("completion_tokens") or 0),
    )


def approx_entropy(top: Sequence[Sequence[Any]]) -> float:
    """Lower bound (nats) on a next-token entropy from its top-k ``[logprob, id, ...]``:
    ``-sum(p log p)`` over the top k, plus ``-r log r`` for the tail mass ``r`` as if it were
    one token (merging outcomes never raises entropy)."""
    probs = [math.exp(float(entry[0])) for entry in top if entry[0] is not None]
    entropy = -sum(p * math.log(p) for p in probs if p > 0.0)
    tail = 1.0 - sum(probs)
    if tail > 1e-12:
        entropy -= tail * math.log(tail)
    return entropy


def _finish(out: Mapping[str, Any]) -> tuple[FinishReason, str | int | None]:
    reason = out.get("meta_info", {}).get("finish_reason") or {}
    kind = reason.get("type")
    if kind == "abort":
        return "abort", None
    if kind == "stop":
        matched = reason.get("matched")
        return "stop", matched if isinstance(matched, str | int) else None
    return "length", None


def completion_from_output(
    out: Mapping[str, Any], sampling: SamplingParams, decode: Decode
) -> Completion:
    """One sample of a finished SGLang output dict.

    :param decode: the model's detokenizer (special tokens skipped), to find where a stop
        string begins in the ids.
    """
    finish_reason, matched = _finish(out)
    text = str(out.get("text", ""))
    ids = [int(i) for i in out.get("output_ids", [])]
    keep = len(ids)
    if not sampling.include_stop and finish_reason == "stop":
        if isinstance(matched, int) and ids and ids[-1] == matched:
            keep -= 1
        elif isinstance(matched, str):
            # The text was cut before the stop string; drop ids whose text lies past it.
            while keep > 0 and len(decode(ids[: keep - 1])) >= len(text):
                keep -= 1
    meta = out.get("meta_info", {})
    token_lp = meta.get("output_token_logprobs") or []
    top = meta.get("output_top_logprobs") or []
    return Completion(
        text=text,
        token_ids=ids[:keep],
        finish_reason=finish_reason,
        matched_stop=matched,
        logprobs=[float(e[0]) for e in token_lp[:keep]] if sampling.logprobs else None,
        top_logprobs=(
            [
                {int(e[1]): float(e[0]) for e in position[: sampling.top_logprobs]}
                for position in top[:keep]
            ]
            if sampling.top_logprobs
            else None
        ),
        entropies=(
            [approx_entropy(position) for position in top[:keep]]
            if sampling.return_entropy
            else None
        ),
    )


class StreamAssembler:
    """Turns SGLang's cumulative stream chunks into deltas, per sample ``index``.

    Each chunk carries the output so far; the delta is what the previous chunk of the same
    sample did not have. The last chunk (``finish_reason`` set) also carries the finished
    :class:`Completion` and the sample's usage.
    """

    def __init__(self, sampling: SamplingParams, decode: Decode) -> None:
        self._sampling = sampling
        self._decode = decode
        self._seen: dict[int, tuple[int, int]] = {}  # index -> (num ids, num chars) sent
        self.finished: set[int] = set()

    def feed(self, chunk: Mapping[str, Any]) -> GenerationChunk:
        index = int(chunk.get("index", 0))
        ids = list(chunk.get("output_ids", []))
        text = str(chunk.get("text", ""))
        num_ids, num_chars = self._seen.get(index, (0, 0))
        self._seen[index] = (len(ids), len(text))
        meta = chunk.get("meta_info", {})
        delta = GenerationChunk(index=index, token_ids=ids[num_ids:], text=text[num_chars:])
        if meta.get("finish_reason") is None:
            return delta
        self.finished.add(index)
        delta.completion = completion_from_output(chunk, self._sampling, self._decode)
        delta.usage = usage_from_meta(meta)
        return delta
