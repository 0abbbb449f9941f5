"""Parity of our forward with Hugging Face transformers on the same weights (issue #3 §7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from orchestrator.runtimes.embedded import EmbeddedRuntime, tiny_random_model
from transformers import AutoModelForCausalLM, GenerationConfig

from orchestrator import GenerateRequest, SamplingParams, ScoreRequest

pytestmark = pytest.mark.anyio

PREFIX = "Once upon a time, in a village by the sea, there lived an old fisherman who "
PROMPTS = [
    PREFIX + "loved the storms.",
    PREFIX + "never caught a single fish.",
    PREFIX + "talked to the gulls every morning.",
    "A completely different prompt about prime numbers: 2, 3, 5, 7,",
]


def hf_greedy(
    model_dir: Path | str, ids: list[int], steps: int
) -> tuple[list[int], list[torch.Tensor]]:
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    config = GenerationConfig(
        max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            generation_config=config,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, len(ids) :].tolist(), [s[0] for s in out.scores]


def assert_greedy_parity(ours: list[int], reference: list[int], scores: list[torch.Tensor]) -> None:
    """Token for token, except that a divergence must sit on a near-tie (top-2 gap < 1e-4),
    after which the sequences are no longer comparable."""
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
        if a != b:
            top2 = scores[i].topk(2).values
            gap = float(top2[0] - top2[1])
            assert gap < 1e-4, f"divergence at token {i} without a near-tie (gap {gap})"
            return


async def test_greedy_generation_matches_hf_generate(
    tiny_model_dir: Path, runtime: EmbeddedRuntime
) -> None:
    params = SamplingParams(max_new_tokens=64, temperature=0, ignore_eos=True)
    results = await runtime.generate([GenerateRequest(prompt=p, sampling=params) for p in PROMPTS])
    # The three prompts sharing PREFIX were served from one computed prefix.
    assert [r.usage.cached_tokens > 0 for r in results] == [False, True, True, False]
    for prompt, result in zip(PROMPTS, results, strict=True):
        ids = await runtime.tokenize(prompt)
        reference, scores = hf_greedy(tiny_model_dir, ids, 64)
        assert_greedy_parity(result.completions[0].token_ids, reference, scores)
    assert runtime.statistics().blocks_in_use == 0


async def test_decoding_over_a_long_shared_prefix_matches_hf(
    tiny_model_dir: Path, runtime: EmbeddedRuntime
) -> None:
    # Every decode row starts with the same 100+ tokens: the cascade path attends them once.
    prompts = [PREFIX * 6 + ending for ending in ("storms.", "fish.", "gulls.")]
    params = SamplingParams(max_new_tokens=32, temperature=0, ignore_eos=True)
    results = await runtime.generate([GenerateRequest(prompt=p, sampling=params) for p in prompts])
    assert min(r.usage.cached_tokens for r in results[1:]) >= 64
    for prompt, result in zip(prompts, results, strict=True):
        ids = await runtime.tokenize(prompt)
        reference, scores = hf_greedy(tiny_model_dir, ids, 32)
        assert_greedy_parity(result.completions[0].token_ids, reference, scores)


@pytest.mark.parametrize("attention", ["sdpa", "segment"])
async def test_prompt_logits_match_hf_forward(
    tiny_model_dir: Path, make_runtime: Callable[..., EmbeddedRuntime], attention: str
) -> None:
    # Chunks of 7 tokens with blocks of 4: chunk and block boundaries never line up.
    runtime = make_runtime(attention=attention, max_num_batched_tokens=7)
    ids = await runtime.tokenize(PROMPTS[0] + PROMPTS[3])
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    scored = await runtime.score([ScoreRequest(prompt=ids[:1], continuations=(tuple(ids[1:]),))])
    expected = reference[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(scored[0].token_logprobs[0]), expected, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
async def test_other_families_match_hf(tmp_path: Path, family: str) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    }[family]
    config = config_cls(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=2,
        initializer_range=0.1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = model_cls(config).eval()
    tiny = tiny_random_model(tmp_path / "tok", seed=0)
    model.save_pretrained(str(tmp_path / family))
    for file in tiny.iterdir():
        if file.name.startswith(("tokenizer", "chat_template")):
            (tmp_path / family / file.name).write_bytes(file.read_bytes())
    runtime = EmbeddedRuntime.from_pretrained(
        str(tmp_path / family), block_size=4, kv_cache_bytes=2**20
    )
    ids = await runtime.tokenize(PROMPTS[1])
    result = await runtime.generate(
        [
            GenerateRequest(
                prompt=ids,
                sampling=SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True),
            )
        ]
    )
    reference, scores = hf_greedy(tmp_path / family, ids, 16)
    assert_greedy_parity(result[0].completions[0].token_ids, reference, scores)
    await runtime.aclose()


async def test_real_smollm2_matches_hf_generate(smollm2: EmbeddedRuntime) -> None:
    prompts = [PROMPTS[0], PROMPTS[1]]
    params = SamplingParams(max_new_tokens=64, temperature=0, ignore_eos=True)
    results = await smollm2.generate([GenerateRequest(prompt=p, sampling=params) for p in prompts])
    model_dir = smollm2.model_directory
    for prompt, result in zip(prompts, results, strict=True):
        ids = await smollm2.tokenize(prompt)
        reference, scores = hf_greedy(model_dir, ids, 64)
        assert_greedy_parity(result.completions[0].token_ids, reference, scores)
    assert results[1].usage.cached_tokens > 0
    assert smollm2.statistics().blocks_in_use == 0
