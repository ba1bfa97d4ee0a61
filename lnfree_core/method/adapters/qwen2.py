"""Qwen2 / Qwen2.5 (Qwen2ForCausalLM): Llama's structure (RMSNorm, SwiGLU, rotary, GQA) with biases on
q_proj, k_proj and v_proj, and often tied embeddings. Everything is the Llama adapter's; the q/k/v
biases are added after the norm, so the export's rho scaling of v_proj leaves them unchanged."""

from __future__ import annotations

from .llama import LlamaAdapter


class Qwen2Adapter(LlamaAdapter):
    model_type = "qwen2"
    family = "Qwen2"
