"""GlimpRouter routes exactly the steps whose first-token entropy exceeds tau (issue 7)."""

from __future__ import annotations

import math

import pytest
from orchestrator.graphs.search import DEFAULT_SYSTEM_PROMPT
from orchestrator.plugins.routers.glimp_router import (
    GlimpRouter,
    GlimpRouterConfig,
    GlimpStep,
    glimp_steps,
    large_share,
    truncated_entropy,
)

from orchestrator import (
    Capability,
    CapabilityMissing,
    ChatMessage,
    GenerateRequest,
    Orchestrator,
    Prompt,
    RunConfig,
    SamplingParams,
)
from orchestrator.testing import ALL_CAPABILITIES, ScriptedOutput, ScriptedRuntime

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
#: The reasoning steps, with the entropy of the small model's first token of each.
STEPS = ["First, 3 + 4 = 7.\n\n", "Wait, check it again.\n\n", "So he has 7.\n\n", "#### 7"]
ENTROPIES = [0.2, 2.5, 1.0, 0.1]
TAU = 1.0


def _step_index(prompt_text: str) -> int:
    return prompt_text.split("<|im_start|>assistant\n", 1)[1].count("\n\n")


def _small(entropies: list[float], **kwargs: object) -> ScriptedRuntime:
    def respond(prompt_text: str, sampling: SamplingParams, index: int) -> ScriptedOutput:
        k = _step_index(prompt_text)
        return ScriptedOutput(text=STEPS[k], entropy=entropies[k])

    return ScriptedRuntime(responder=respond, model="small", cost_per_token=0.25, **kwargs)  # type: ignore[arg-type]


def _large(**kwargs: object) -> ScriptedRuntime:
    def respond(prompt_text: str, sampling: SamplingParams, index: int) -> str:
        return STEPS[_step_index(prompt_text)].replace(".", " (L).", 1)

    return ScriptedRuntime(responder=respond, model="large", **kwargs)  # type: ignore[arg-type]


def _config(**router: object) -> RunConfig:
    return RunConfig(
        graph="search",
        strategy="beam",
        strategy_options={"width": 1, "expansions_per_beam": 1},
        router="glimp",
        router_options={"tau": TAU, "answer_markers": ["####"], **router},
    )


def _base_text() -> str:
    return (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )


async def test_routes_exactly_the_steps_above_tau() -> None:
    small, large = _small(ENTROPIES), _large()
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, _config())
    ids = ["r.0", "r.0.0", "r.0.0.0", "r.0.0.0.0"]
    assert result.meta["glimp"] == {
        "tau": 1.0,
        "small": "small",
        "large": "large",
        "steps": [
            {"node": ids[0], "entropy": 0.2, "route": "small", "reason": "probe"},
            {"node": ids[1], "entropy": 2.5, "route": "large", "reason": "probe"},
            {"node": ids[2], "entropy": 1.0, "route": "small", "reason": "probe"},  # = tau
            {"node": ids[3], "entropy": 0.1, "route": "large", "reason": "marker_probe"},
        ],
    }
    graph = result.graph
    texts = [graph[i].text for i in ids]
    assert texts == [STEPS[0], "Wait, check it again (L).\n\n", STEPS[2], "#### 7"]
    assert [graph[i].runtime for i in ids] == ["small", "large", "small", "large"]
    assert [graph[i].scores["glimp_entropy"] for i in ids] == ENTROPIES
    assert result.answer == "7"
    steps = glimp_steps(graph, result.meta)
    assert steps == [
        GlimpStep(ids[0], 0.2, "small", "probe", len(STEPS[0])),
        GlimpStep(ids[1], 2.5, "large", "probe", len(texts[1])),
        GlimpStep(ids[2], 1.0, "small", "probe", len(STEPS[2])),
        GlimpStep(ids[3], 0.1, "large", "marker_probe", len("#### 7")),
    ]
    tokens = sum(s.tokens for s in steps)
    assert large_share(steps, "large") == (0.5, (len(texts[1]) + 6) / tokens)
    # The small runtime ran 4 one-token probes and wrote 2 steps; the large wrote 2 steps.
    probes = [c for c in small.calls if c.sampling and c.sampling.max_new_tokens == 1]
    assert len(probes) == 4 and len(small.calls) == 6
    assert all(c.sampling and c.sampling.return_entropy for c in probes)
    assert len(large.calls) == 2
    # The probe is charged to its step: prompt, plus one probe token (EOS-free step 4: "#").
    first = graph[ids[0]]
    assert first.usage.generated_tokens == 1 + len(STEPS[0])
    assert result.usage.generated_tokens == sum(graph[i].usage.generated_tokens for i in ids)


async def test_each_runtime_prefills_only_the_other_runtimes_tokens() -> None:
    small, large = _small(ENTROPIES), _large()
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, _config())
    base = len(await small.tokenize(_base_text())) - 3 * 11 - 2 * 9  # ChatML markers: 1 id
    s1, l2, s3 = (len(result.graph[i].text) for i in ("r.0", "r.0.0", "r.0.0.0"))
    # Large: step 2 prefills everything (its first call), step 4 only the small's step 3.
    assert large.stats.num_prefill_tokens == (base + s1) + s3
    # Small: probe 1 prefills the prompt, probe 3 the large's step 2 but its first token
    # (the small's own probe token "W" of step 2, cached); its other four calls hit the cache
    # fully and recompute only the last prompt token, as a radix cache must.
    assert small.stats.num_prefill_tokens == base + (l2 - 1) + 4
    assert small.stats.num_cached_tokens == small.stats.num_prompt_tokens - (base + l2 + 3)


async def test_answer_requests_go_to_the_large_runtime_without_a_probe() -> None:
    small, large = _small(ENTROPIES), _large()
    config = RunConfig(
        graph="search", strategy="best_of_n", strategy_options={"n": 2}, router="glimp"
    )
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, config)
    assert [s["reason"] for s in result.meta["glimp"]["steps"]] == ["answer", "answer"]
    assert small.calls == [] and len(large.calls) == 2


async def test_a_marker_in_the_path_ends_the_thinking() -> None:
    steps = ["Think: 3 + 4 = 7.\n\n", "</think>\n\n", "He has 7 apples.\n\n", "#### 7"]

    def respond(prompt_text: str, sampling: SamplingParams, index: int) -> ScriptedOutput:
        return ScriptedOutput(text=steps[_step_index(prompt_text)], entropy=0.0)

    small = ScriptedRuntime(responder=respond, model="small")
    large = ScriptedRuntime(responder=respond, model="large")
    config = _config(answer_markers=["</think>"])
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, config)
    assert [(s["route"], s["reason"]) for s in result.meta["glimp"]["steps"]] == [
        ("small", "probe"),
        ("large", "marker_probe"),  # the step opens with the marker
        ("large", "after_marker"),
        ("large", "after_marker"),
    ]
    assert len([c for c in small.calls if c.sampling and c.sampling.max_new_tokens == 1]) == 2


async def test_tau_sets_the_cut() -> None:
    # (Cases in a loop: the root conftest adds the anyio marker after parametrization.)
    for tau, routes in [(0.0, "LLLL"), (0.2, "SLLL"), (2.5, "SSSL")]:
        small, large = _small(ENTROPIES), _large()
        result = await Orchestrator({"small": small, "large": large}).run(
            QUESTION, _config(tau=tau)
        )
        got = "".join(s["route"][0].upper() for s in result.meta["glimp"]["steps"])
        assert got == routes, tau


async def test_text_context_lets_runtimes_with_different_tokenizers_collaborate() -> None:
    # The large runtime numbers its chat markers differently: token ids do not transfer.
    special = {"<|im_start|>": 7, "<|im_end|>": 8}
    small, large = _small(ENTROPIES), _large(special_tokens=special, eos_token_ids=[8])
    config = _config().model_copy(update={"graph_options": {"context": "text"}})
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, config)
    assert result.answer == "7"
    step4 = _base_text() + "".join(result.graph[i].text for i in ("r.0", "r.0.0", "r.0.0.0"))
    assert large.calls[-1].prompt_text == step4
    messages = (
        ChatMessage(role="system", content=DEFAULT_SYSTEM_PROMPT),
        ChatMessage(role="user", content=QUESTION),
    )
    rendered = await large.render(Prompt(messages=messages))
    assert rendered[0] == 7  # rendered with the large runtime's own special ids
    # With token-id prompts the small runtime's ids reach the large one, which refuses them.
    small, large = _small(ENTROPIES), _large(special_tokens=special, eos_token_ids=[8])
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, _config())
    assert result.graph["r.0.0"].error == "RequestRejected: runtime 'large': unknown token id 1"


async def test_approximate_entropy_is_reported_as_a_fallback() -> None:
    caps = ALL_CAPABILITIES & ~Capability.EXACT_ENTROPY
    small, large = _small(ENTROPIES, capabilities=caps), _large()
    result = await Orchestrator({"small": small, "large": large}).run(QUESTION, _config())
    assert result.fallbacks == ["glimp: approximate entropy (small lacks EXACT_ENTROPY)"]
    assert [c.sampling.top_logprobs for c in small.calls if c.sampling][:1] == [20]


async def test_a_small_runtime_without_entropies_is_refused_by_name() -> None:
    small = ScriptedRuntime({"default": {"outputs": ["x"]}}, model="small")
    request = GenerateRequest(prompt="q", sampling=SamplingParams(max_new_tokens=1))
    completion = (await small.generate([request]))[0].completions[0]
    assert completion.entropies is None and completion.top_logprobs is None
    router = GlimpRouter(GlimpRouterConfig())
    ctx = Orchestrator(small).prepare("q").ctx
    with pytest.raises(CapabilityMissing, match="runtime 'small': does not support EXACT_ENTROPY"):
        router._entropy(completion, True, ctx)


def test_truncated_entropy_counts_the_rest_as_one_outcome() -> None:
    half = math.log(0.5)
    assert truncated_entropy({1: half, 2: half}) == pytest.approx(math.log(2))
    quarter = math.log(0.25)
    expected = -(2 * 0.25 * quarter + 0.5 * math.log(0.5))
    assert truncated_entropy({1: quarter, 2: quarter}) == pytest.approx(expected)
    assert truncated_entropy({1: 0.0}) == 0.0
