"""Options of the ``hogwild`` graph."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_NAMES", "HogwildConfig"]

#: Alice and Bob are the paper's; the rest are ours [unverified].
DEFAULT_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi")


class HogwildConfig(BaseModel):
    """Hogwild! Inference (Rodionov et al., arXiv 2504.06261), reference ``eqimp/hogwild_llm``.

    - ``num_workers``: workers decoding in lockstep (the paper's 2).
    - ``max_steps``: lockstep inference steps (one token per worker each), the reference's
      ``max_steps``; the run's token budget applies on top.
    - ``self_check_every``: the reference's ``insert_s1_collab_message_every_tokens`` (256 on
      ``main``; 512 in its Colab, 1024 on ``inference_lib``): once more than this many tokens
      were fed since the last nudge (one counter over all workers), the next step prefix
      gets the self-check prompt.
    - ``finisher_max_tokens``: greedy tokens after the s1 finisher (16).
    - ``temperature`` / ``top_p``: collaboration sampling; the reference samples with the
      model's generation config (QwQ-32B: 0.6 / 0.95) [unverified for other models].
    - ``suggestions``: include the "How to collaborate" list (reference default True).
    - ``step_boundary``: ``token`` (the reference's rule: the newest token contains
      ``"\n\n"``) or ``text`` (the newest token completes a ``"\n\n"`` that ends the
      step's text: for tokenizers such as SmolLM2's, which write ``".\n\n"`` as ``"."``,
      ``"\n"``, ``"\n"``, so the reference's rule never fires) [ours].
    - ``numeric_answer``: a ``\boxed{}`` answer must be a number (the reference's
      ``MathFormatting`` parses it with ``float``); False accepts any non-empty text.
    - ``fallback_every``: on runtimes without shared segments, each worker is re-prompted
      with its combined view every this many tokens (approximate; reported as a fallback).
    - ``force_fallback``: take the fallback even where shared segments exist (benchmarks).

    An EOS from any worker ends the collaboration (as on ``inference_lib``): the ``main``
    branch suppresses EOS instead, which needs logit suppression the runtime protocol does
    not offer.
    """

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(2, ge=2)
    worker_names: tuple[str, ...] = DEFAULT_NAMES
    max_steps: int = Field(1024, ge=1)
    self_check_every: int = Field(256, ge=1)
    finisher_max_tokens: int = Field(16, ge=0)
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    suggestions: bool = True
    step_boundary: Literal["token", "text"] = "token"
    numeric_answer: bool = True
    fallback_every: int = Field(16, ge=1)
    force_fallback: bool = False

    @model_validator(mode="after")
    def _enough_names(self) -> HogwildConfig:
        if len(self.worker_names) < self.num_workers:
            raise ValueError(
                f"{self.num_workers} workers need {self.num_workers} worker_names, "
                f"got {len(self.worker_names)}"
            )
        if len(set(self.worker_names[: self.num_workers])) < self.num_workers:
            raise ValueError("worker_names must be distinct")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return self.worker_names[: self.num_workers]
