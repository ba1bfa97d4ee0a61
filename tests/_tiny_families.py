"""Tiny random-init models of every supported non-GPT-2 family (2 layers, 64 wide, vocab 1024)."""

from __future__ import annotations

import torch

FAMILIES = ("gpt_neox", "llama", "qwen2", "qwen3")
VARIANTS = FAMILIES + ("gpt_neox_seq",)  # + GPT-NeoX with the sequential residual (use_parallel_residual=False)
COMMON = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128, initializer_range=0.1)


def tiny_family_model(family: str, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    if family in ("gpt_neox", "gpt_neox_seq"):  # Pythia-like: parallel residual, partial rotary, untied, biases
        cfg = tf.GPTNeoXConfig(**COMMON, intermediate_size=256, use_parallel_residual=family == "gpt_neox",
                               hidden_act="gelu", eos_token_id=0, bos_token_id=0, tie_word_embeddings=False)
        model = tf.GPTNeoXForCausalLM(cfg)
    elif family == "llama":  # untied, GQA, SwiGLU
        cfg = tf.LlamaConfig(**COMMON, intermediate_size=128, num_key_value_heads=2, eos_token_id=1, bos_token_id=1,
                             tie_word_embeddings=False)
        model = tf.LlamaForCausalLM(cfg)
    elif family == "qwen2":  # tied, q/k/v biases
        cfg = tf.Qwen2Config(**COMMON, intermediate_size=128, num_key_value_heads=2, eos_token_id=1, bos_token_id=1,
                             tie_word_embeddings=True)
        model = tf.Qwen2ForCausalLM(cfg)
    elif family == "qwen3":  # per-head q_norm / k_norm, explicit head_dim
        cfg = tf.Qwen3Config(**COMMON, intermediate_size=128, num_key_value_heads=2, head_dim=16, eos_token_id=1,
                             bos_token_id=1, tie_word_embeddings=False)
        model = tf.Qwen3ForCausalLM(cfg)
    else:
        raise ValueError(family)
    with torch.no_grad():  # non-trivial norm gains and biases, so that the tests can see them
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model.eval()
