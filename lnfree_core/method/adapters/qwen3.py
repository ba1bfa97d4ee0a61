"""Qwen3 (Qwen3ForCausalLM): Llama's structure plus per-head RMSNorms on queries and keys.

    q = q_norm(q_proj(rms_1(x)) viewed [.., H, d_head]),   k = k_norm(k_proj(rms_1(x)) viewed [.., H_kv, d_head])

q_norm and k_norm normalise each head's query and key over d_head (before rotary). Decision: they are
removed too, as FakeRMSNorm blocks "qn.l" and "kn.l" that are frozen at the same event as LN_qk of
their layer (`companions`), so the schedule keeps the paper's four groups. Two reasons:
  * a stock Qwen3 has one rms_norm_eps for every RMSNorm, q_norm/k_norm included, so a model that
    keeps them live while the residual-stream norms are frozen has no exact stock export;
  * they are the last per-token divisions left on the q/k path; keeping them live would leave the
    model not norm-free. Their sigma_bar is the average RMS over tokens and heads.
The model is then entirely linear in its norms, and exports to a stock Qwen3 with the huge-eps trick
(q_norm/k_norm weights gamma * sqrt(E) / sigma_bar, like the others).
"""

from __future__ import annotations

from torch import nn

from ..fakeln import FakeLayerNorm
from ..fakermsnorm import FakeRMSNorm
from .llama import EXPORT_EPS, LlamaAdapter, _eps
from .stock_export import norm_weight


class Qwen3Adapter(LlamaAdapter):
    model_type = "qwen3"
    family = "Qwen3"

    def _install_extra(self, layer: int, attn: nn.Module) -> None:
        for attr, kind in (("q_norm", "qn"), ("k_norm", "kn")):
            norm = getattr(attn, attr)
            if not isinstance(norm, FakeLayerNorm):
                setattr(attn, attr, FakeRMSNorm(norm.weight, _eps(norm), name=f"{kind}.{layer}"))

    def _extra_modules(self, layer: int, attn: nn.Module) -> dict[str, FakeLayerNorm]:
        return {f"{kind}.{layer}": getattr(attn, attr) for attr, kind in (("q_norm", "qn"), ("k_norm", "kn"))
                if isinstance(getattr(attn, attr), FakeLayerNorm)}

    def companions(self, name: str) -> list[str]:
        """Blocks frozen together with `name`: q_norm and k_norm of layer l with LN_qk of layer l."""
        kind, _, layer = name.partition(".")
        return [f"qn.{layer}", f"kn.{layer}"] if kind == "qk" else []

    def _stock_norm_keys(self, key: str) -> bool:
        return super()._stock_norm_keys(key) or "_norm." in key

    def _export_extra(self, layer: int, attn: nn.Module, sd: dict, prefix: str, removed: bool) -> None:
        for attr in ("q_norm", "k_norm"):
            sd[f"{prefix}self_attn.{attr}.weight"].copy_(norm_weight(getattr(attn, attr), removed, EXPORT_EPS))
