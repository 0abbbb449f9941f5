"""The runtime protocol on a tiny random model: stops, n, seeds, logprobs, entropy, score,
streaming, prefix reuse. Expected values come from independent paths (a plain greedy run,
``score``, an HF forward), never from recorded outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from orchestrator.runtimes.embedded import EmbeddedRuntime
from transformers import AutoModelForCausalLM

from orchestrator import (
    Capability,
    GenerateRequest,
    Runtime,
    SamplingParams,
    ScoreRequest,
    SupportsSegments,
    SupportsSequences,
)

pytestmark = pytest.mark.anyio

PROMPT = "The history of the printing press begins"


async def greedy(runtime: EmbeddedRuntime, prompt: str = PROMPT, **params: object) -> list[int]:
    sampling = SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True, **params)
    result = await runtime.generate([GenerateRequest(prompt=prompt, sampling=sampling)])
    return result[0].completions[0].token_ids


def first_new(tokens: list[int], texts: list[str], start: int = 2) -> int:
    """Index of the first token from ``start`` whose id and text did not occur before it."""
    return next(
        i
        for i in range(start, len(tokens))
        if tokens[i] not in tokens[:i] and texts[i] not in "".join(texts[:i])
    )


def test_declares_what_it_implements(runtime: EmbeddedRuntime) -> None:
    assert isinstance(runtime, Runtime)
    assert isinstance(runtime, SupportsSequences) and isinstance(runtime, SupportsSegments)
    assert runtime.provider == "orchestrator.embedded"
    assert runtime.eos_token_ids == (2,)
    assert runtime.capabilities == (
        Capability.PREFIX_SHARING
        | Capability.SEQUENCE_HANDLES
        | Capability.KV_RANGE_DROP
        | Capability.SHARED_SEGMENTS
        | Capability.EXACT_ENTROPY
        | Capability.GRAMMAR
        | Capability.TOKEN_INJECTION
        | Capability.DETERMINISTIC_SAMPLING
        | Capability.STREAMING
    )


async def test_first_layers_draft_variant_is_cheaper(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    full, draft = make_runtime(), make_runtime(layers=1)
    assert draft.model_config.num_layers == 1
    assert draft.cost_per_token < full.cost_per_token
    assert len(await greedy(draft)) == 16


@pytest.mark.parametrize("include_stop", [False, True])
async def test_stop_string_is_returned_and_cut(
    runtime: EmbeddedRuntime, include_stop: bool
) -> None:
    tokens = await greedy(runtime)
    texts = [await runtime.detokenize([t]) for t in tokens]
    k = first_new(tokens, texts)
    sampling = SamplingParams(
        max_new_tokens=16,
        temperature=0,
        ignore_eos=True,
        stop=[texts[k], "never-appears"],
        include_stop=include_stop,
    )
    [result] = await runtime.generate([GenerateRequest(prompt=PROMPT, sampling=sampling)])
    completion = result.completions[0]
    kept = tokens[: k + 1] if include_stop else tokens[:k]
    assert (completion.finish_reason, completion.matched_stop) == ("stop", texts[k])
    assert completion.token_ids == kept
    assert completion.text == await runtime.detokenize(kept)
    assert result.usage.generated_tokens == k + 1


@pytest.mark.parametrize("include_stop", [False, True])
async def test_stop_token_id_is_returned(runtime: EmbeddedRuntime, include_stop: bool) -> None:
    tokens = await greedy(runtime)
    k = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    completion = (
        await runtime.generate(
            [
                GenerateRequest(
                    prompt=PROMPT,
                    sampling=SamplingParams(
                        max_new_tokens=16,
                        temperature=0,
                        stop_token_ids=[tokens[k]],
                        include_stop=include_stop,
                    ),
                )
            ]
        )
    )[0].completions[0]
    assert (completion.finish_reason, completion.matched_stop) == ("stop", tokens[k])
    assert completion.token_ids == tokens[: k + 1 if include_stop else k]


async def test_n_samples_share_one_prefill_and_are_reproducible(runtime: EmbeddedRuntime) -> None:
    ids = await runtime.tokenize(PROMPT)
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11, n=3)
    runner = runtime.engine.runner
    before = (runner.tokens_computed, runner.blocks_copied)
    [result] = await runtime.generate([GenerateRequest(prompt=PROMPT, sampling=sampling)])
    samples = [c.token_ids for c in result.completions]
    assert len({tuple(s) for s in samples}) == 3
    assert result.usage.generated_tokens == 18
    # The prompt is computed once; each sample then computes its 5 fed-back tokens; the
    # prompt's partial last block is copied for each of the two extra samples.
    assert runner.tokens_computed - before[0] == len(ids) + 3 * 5
    assert runner.blocks_copied - before[1] == (2 if len(ids) % 4 else 0)
    [again] = await runtime.generate([GenerateRequest(prompt=PROMPT, sampling=sampling)])
    assert [c.token_ids for c in again.completions] == samples


async def test_seeded_sample_does_not_depend_on_batch_mates(runtime: EmbeddedRuntime) -> None:
    seeded = GenerateRequest(
        prompt=PROMPT,
        sampling=SamplingParams(
            max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=50, min_p=0.01, seed=3
        ),
    )
    [alone] = await runtime.generate([seeded])
    mates = [
        GenerateRequest(
            prompt=f"Other prompt {i} " * (i + 1),
            sampling=SamplingParams(max_new_tokens=20, temperature=1.0),
        )
        for i in range(3)
    ]
    results = await runtime.generate([mates[0], seeded, mates[1], mates[2]])
    assert results[1].completions[0].token_ids == alone.completions[0].token_ids
    other_seed = seeded.sampling.model_copy(update={"seed": 4})
    [different] = await runtime.generate([GenerateRequest(prompt=PROMPT, sampling=other_seed)])
    assert different.completions[0].token_ids != alone.completions[0].token_ids


async def test_logprobs_top_logprobs_and_exact_entropy(
    tiny_model_dir: Path, runtime: EmbeddedRuntime
) -> None:
    sampling = SamplingParams(
        max_new_tokens=8,
        temperature=0,
        ignore_eos=True,
        logprobs=True,
        top_logprobs=3,
        return_entropy=True,
    )
    [result] = await runtime.generate([GenerateRequest(prompt=PROMPT, sampling=sampling)])
    c = result.completions[0]
    assert c.logprobs is not None and c.top_logprobs is not None and c.entropies is not None
    ids = await runtime.tokenize(PROMPT)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids + c.token_ids])).logits[0, len(ids) - 1 : -1]
    log_probs = logits.log_softmax(-1)
    expected_entropy = -(log_probs.exp() * log_probs).sum(-1)
    assert torch.allclose(torch.tensor(c.entropies), expected_entropy, atol=1e-4)
    expected_lp = log_probs.gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(c.logprobs), expected_lp, atol=1e-4)
    for position, (token, top) in enumerate(zip(c.token_ids, c.top_logprobs, strict=True)):
        values, indices = log_probs[position].topk(3)
        assert list(top) == indices.tolist()  # greedy: the chosen token is the top one
        assert next(iter(top)) == token
        assert torch.allclose(torch.tensor(list(top.values())), values, atol=1e-4)
    [scored] = await runtime.score(
        [ScoreRequest(prompt=PROMPT, continuations=(tuple(c.token_ids),))]
    )
    assert scored.token_logprobs[0] == pytest.approx(c.logprobs, abs=1e-5)


async def test_score_text_and_token_continuations(runtime: EmbeddedRuntime) -> None:
    conts = (" was a revolution", " is long")
    [by_text] = await runtime.score([ScoreRequest(prompt=PROMPT, continuations=conts)])
    as_ids = tuple([tuple(await runtime.tokenize(c)) for c in conts])
    [by_ids] = await runtime.score([ScoreRequest(prompt=PROMPT, continuations=as_ids)])
    for text_lps, id_lps in zip(by_text.token_logprobs, by_ids.token_logprobs, strict=True):
        assert text_lps == pytest.approx(id_lps, abs=1e-5)
    assert [len(t) for t in by_text.token_logprobs] == [len(c) for c in as_ids]
    assert by_text.logprobs == pytest.approx([sum(t) for t in by_text.token_logprobs])
    assert runtime.statistics().blocks_in_use == 0


async def test_stream_chunks_add_up_to_the_completion(runtime: EmbeddedRuntime) -> None:
    tokens = await greedy(runtime)
    texts = [await runtime.detokenize([t]) for t in tokens]
    k = first_new(tokens, texts, start=4)
    stop = texts[k - 1] + texts[k]  # spans two tokens: its first half is held back
    request = GenerateRequest(
        prompt=PROMPT,
        sampling=SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True, stop=[stop]),
    )
    chunks = [chunk async for chunk in runtime.stream(request)]
    final = chunks[-1]
    assert final.completion is not None and final.usage is not None
    assert final.completion.matched_stop == stop
    assert "".join(c.text for c in chunks) == final.completion.text
    assert [t for c in chunks for t in c.token_ids] == final.completion.token_ids
    assert len([c for c in chunks if c.token_ids]) >= 2  # it did stream
    assert runtime.statistics().blocks_in_use == 0


async def test_a_repeated_prompt_is_served_from_the_prefix_cache(runtime: EmbeddedRuntime) -> None:
    ids = await runtime.tokenize(PROMPT * 3)
    runner = runtime.engine.runner
    await greedy(runtime, PROMPT * 3)
    before = runner.tokens_computed
    sampling = SamplingParams(max_new_tokens=4, temperature=0)
    [result] = await runtime.generate([GenerateRequest(prompt=PROMPT * 3, sampling=sampling)])
    cached = (len(ids) - 1) // 4 * 4  # full blocks, never the last token
    assert result.usage.cached_tokens == cached
    assert runner.tokens_computed - before == len(ids) - cached + 3


async def test_requests_arriving_together_compute_their_shared_prefix_once(
    runtime: EmbeddedRuntime,
) -> None:
    prefix = (await runtime.tokenize(PROMPT * 8))[:32]
    assert len(prefix) == 32  # 8 full blocks
    prompts = [prefix + [100 + i] * 5 for i in range(4)]
    runner = runtime.engine.runner
    sampling = SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True)
    results = await runtime.generate(
        [GenerateRequest(prompt=p, sampling=sampling) for p in prompts]
    )
    # 32 shared + 4 x 5 distinct prompt tokens, then 2 fed-back tokens per request.
    assert runner.tokens_computed == 32 + 4 * 5 + 4 * 2
    assert [r.usage.cached_tokens for r in results] == [0, 32, 32, 32]
    assert runtime.statistics().blocks_in_use == 0


async def test_streaming_n_samples_matches_generate(runtime: EmbeddedRuntime) -> None:
    request = GenerateRequest(
        prompt=PROMPT, sampling=SamplingParams(max_new_tokens=6, temperature=1.0, seed=7, n=2)
    )
    chunks = [chunk async for chunk in runtime.stream(request)]
    [expected] = await runtime.generate([request])
    finals = [c for c in chunks if c.completion is not None]
    assert [c.index for c in finals] == [0, 1]
    assert [c.completion for c in finals] == expected.completions
    for index in (0, 1):
        streamed = [t for c in chunks if c.index == index for t in c.token_ids]
        assert streamed == expected.completions[index].token_ids
    assert finals[-1].usage == expected.usage.model_copy(update={"cached_tokens": 0})


async def test_more_score_continuations_than_batch_slots(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    runtime = make_runtime(max_num_seqs=2)
    continuations = tuple((i, i + 1) for i in range(100, 107))
    [many] = await runtime.score([ScoreRequest(prompt=PROMPT, continuations=continuations)])
    singles = [
        (await runtime.score([ScoreRequest(prompt=PROMPT, continuations=(c,))]))[0]
        for c in continuations[:2]
    ]
    assert len(many.logprobs) == 7
    assert many.logprobs[:2] == pytest.approx([s.logprobs[0] for s in singles], abs=1e-5)
    assert runtime.statistics().blocks_in_use == 0
