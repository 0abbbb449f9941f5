"""Our compact forward for Llama-family decoders (Llama/SmolLM2, Qwen2, Qwen3).

It runs on a *flat* batch: the tokens of every sequence in a step are concatenated
(``[T, hidden]``), so the linear layers, which dominate the cost, run once per step over
all sequences without padding; only attention looks at sequence boundaries, through the
backend's plan. Q/K/V and gate/up projections are fused into one matmul each (fewer,
larger kernels: the CPU path is bound by per-op overhead and matmul efficiency).

Shape, norm and rotary conventions follow HF transformers exactly (fp32 RMSNorm with the
weight applied after the cast back, rotate-half RoPE), which the parity test relies on.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator import RuntimeUnavailable

from .attention import AttentionBackend, KVCache, Rope
from .config import ModelConfig

__all__ = ["CausalLM", "StepInputs"]


@dataclasses.dataclass(slots=True)
class StepInputs:
    """What one forward needs: tokens, where their K/V go, positions, and attention plans.

    ``groups`` splits the tokens into contiguous runs served by one backend each.
    """

    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T] stored positions (keys are rotated at these)
    slot_mapping: torch.Tensor  # [T]
    groups: list[tuple[AttentionBackend, int, int, object]]  # (backend, start, end, plan)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # HF order: normalise in fp32, cast back, then scale (one fused kernel for the first).
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        out: torch.Tensor = self.weight * normed
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        c = config
        self.index = index
        self.num_heads, self.num_kv, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
        self.qkv = nn.Linear(c.hidden_size, qkv, bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=False)
        self.gate_up = nn.Linear(c.hidden_size, 2 * c.intermediate_size, bias=False)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps) if c.qk_norm else None
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps) if c.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        step: StepInputs,
        cache: KVCache,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        # x: [T, hidden]
        h = self.input_norm(x)
        heads, kv_heads = self.num_heads, self.num_kv
        qkv = self.qkv(h).view(-1, heads + 2 * kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(qkv[:, :heads]), self.k_norm(qkv[:, heads : heads + kv_heads])
            qk = Rope.apply(torch.cat((q, k), dim=1), *rope)
        else:  # one rotation for queries and keys: they share positions
            qk = Rope.apply(qkv[:, : heads + kv_heads], *rope)
        q = qk[:, :heads]
        cache.store(
            self.index,
            step.slot_mapping,
            torch.cat((qk[:, heads:], qkv[:, heads + kv_heads :]), dim=1),
        )
        attn = torch.empty_like(q)
        for backend, start, end, plan in step.groups:
            attn[start:end] = backend.forward(self.index, q[start:end], plan)
        x = x + self.o_proj(attn.view(x.shape[0], -1))
        gate, up = self.gate_up(self.post_norm(x)).chunk(2, dim=-1)
        out: torch.Tensor = x + self.down(F.silu(gate) * up)
        return out


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        layers = [DecoderLayer(config, i) for i in range(config.num_layers)]
        self.layers = nn.ModuleList(layers)
        self.decoder_layers = layers  # the same modules, typed
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )

    def forward(
        self, step: StepInputs, cache: KVCache, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Hidden states after the final norm. # -> [T, hidden]"""
        x = self.embed(step.input_ids)
        for layer in self.decoder_layers:
            x = layer(x, step, cache, rope)
        out: torch.Tensor = self.norm(x)
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [N, hidden] -> [N, vocab] in fp32
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()

    def load_hf_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy HF-named tensors in, fusing q/k/v and gate/up.

        :raises RuntimeUnavailable: naming the first missing tensor.
        """

        def take(name: str) -> torch.Tensor:
            try:
                return tensors[name]
            except KeyError:
                raise RuntimeUnavailable(
                    f"weights lack tensor {name!r}", runtime="orchestrator.embedded"
                ) from None

        with torch.no_grad():
            self.embed.weight.copy_(take("model.embed_tokens.weight"))
            self.norm.weight.copy_(take("model.norm.weight"))
            if self.lm_head is not None:
                self.lm_head.weight.copy_(take("lm_head.weight"))
            for i, layer in enumerate(self.decoder_layers):
                p = f"model.layers.{i}."
                attn = [take(f"{p}self_attn.{n}_proj.weight") for n in "qkv"]
                layer.qkv.weight.copy_(torch.cat(attn))
                if layer.qkv.bias is not None:
                    layer.qkv.bias.copy_(
                        torch.cat([take(f"{p}self_attn.{n}_proj.bias") for n in "qkv"])
                    )
                layer.o_proj.weight.copy_(take(f"{p}self_attn.o_proj.weight"))
                mlp = [take(f"{p}mlp.{n}_proj.weight") for n in ("gate", "up")]
                layer.gate_up.weight.copy_(torch.cat(mlp))
                layer.down.weight.copy_(take(f"{p}mlp.down_proj.weight"))
                layer.input_norm.weight.copy_(take(f"{p}input_layernorm.weight"))
                layer.post_norm.weight.copy_(take(f"{p}post_attention_layernorm.weight"))
                if layer.q_norm is not None and layer.k_norm is not None:
                    layer.q_norm.weight.copy_(take(f"{p}self_attn.q_norm.weight"))
                    layer.k_norm.weight.copy_(take(f"{p}self_attn.k_norm.weight"))
