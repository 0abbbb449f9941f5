"""The CUDA path (bf16): runs only where a GPU is present (marker ``gpu``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import GenerateRequest, SamplingParams, ScoreRequest, SegmentSpec

pytestmark = [pytest.mark.anyio, pytest.mark.gpu]

TEXT = "The history of the printing press begins in the fifteenth century"


async def test_bf16_on_cuda_agrees_with_fp32_on_cpu(tiny_model_dir: Path) -> None:
    cpu = EmbeddedRuntime.from_pretrained(str(tiny_model_dir))
    gpu = EmbeddedRuntime.from_pretrained(str(tiny_model_dir), device="cuda")
    assert gpu.engine.runner.dtype.is_floating_point and str(gpu.engine.runner.device) == "cuda:0"
    request = ScoreRequest(prompt=TEXT, continuations=(" and spread across Europe",))
    [on_cpu], [on_gpu] = await cpu.score([request]), await gpu.score([request])
    assert on_gpu.token_logprobs[0] == pytest.approx(on_cpu.token_logprobs[0], abs=0.1)
    sampling = SamplingParams(max_new_tokens=16, temperature=0.8, seed=1, n=3, logprobs=True)
    [result] = await gpu.generate([GenerateRequest(prompt=TEXT, sampling=sampling)])
    assert result.usage.generated_tokens == 48
    handle = await gpu.open_sequence(TEXT)
    [child] = await handle.fork(1)
    view = await gpu.view([SegmentSpec(handle=handle), SegmentSpec(handle=child, start=3)])
    await view.extend([5, 6])
    await view.generate(SamplingParams(max_new_tokens=4, temperature=0))
    await view.release()
    await child.drop_range(2, 5)  # nobody reads it any more
    for h in (child, handle):
        await h.release()
    assert gpu.statistics().blocks_in_use == 0
    await cpu.aclose()
    await gpu.aclose()
