"""An independent reference for lnfree_core.demo.findings, written from the definitions (section 5.3,
appendix H eq. 11-12, Fig. 9) with plain transformers outputs and hooks, not with lnfree's analyses."""

from __future__ import annotations

import torch

SINK_THRESHOLD = 0.3


@torch.no_grad()
def reference_findings(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Sink rate, first-token norm ratio and confidence-neuron ablation of a GPT-2 on tokens x [n, T],
    computed here from their definitions (not with lnfree's analysis helpers).

    * sink rate: share of (sequence, layer, head, query q) with A[q, 0] > 0.3, query 0 included (paper,
      section 5.3, as the authors' code counts it);
    * norm ratio at residual point l: mean_i ||c(x_{i,l,0})|| / mean_{i, t>=1} ||c(x_{i,l,t})||, with the centred
      vector c(x) = x - mean_d(x) (Fig. 3), over the inputs of each block and of the final norm; the largest;
    * ablation: the 3 last-layer neurons with the highest ||w_out,i|| / Var_t(cos(w_out,i, u_t)) (eq. 11-12,
      W_U and w_out mean-centred, final-norm gain folded in) are set to their mean activation over all
      positions together; relative change of mean CE and of mean entropy over the n (T - 1) predictions.
    """
    model.eval()
    model.set_attn_implementation("eager")
    blocks, n_layer = model.transformer.h, len(model.transformer.h)
    resid = {}

    def keep(name):
        def pre(module, args):
            resid[name] = args[0].detach()
        return pre

    handles = [blk.register_forward_pre_hook(keep(l)) for l, blk in enumerate(blocks)]
    handles.append(model.transformer.ln_f.register_forward_pre_hook(keep(n_layer)))
    out = model(input_ids=x, output_attentions=True)
    for h in handles:
        h.remove()
    a0 = torch.stack([a[:, :, :, 0] for a in out.attentions], 1)  # [n, L, H, T]
    sink = float((a0 > SINK_THRESHOLD).double().mean())
    norms = {l: (r - r.mean(dim=-1, keepdim=True)).norm(dim=-1) for l, r in resid.items()}  # [n, T]
    ratios = [float(norms[l][:, 0].mean() / norms[l][:, 1:].mean()) for l in range(n_layer + 1)]

    # confidence neurons of the last MLP (GPT-2 Conv1D c_proj: weight [d_mlp, d_model])
    w_out = blocks[-1].mlp.c_proj.weight.double()
    w_out = w_out - w_out.mean(dim=1, keepdim=True)
    w_u = model.lm_head.weight.double().T * model.transformer.ln_f.weight.double()[:, None]  # [d_model, vocab]
    w_u = w_u - w_u.mean(dim=1, keepdim=True)
    cos = (w_out @ w_u) / (w_out.norm(dim=1, keepdim=True) * w_u.norm(dim=0, keepdim=True))
    score = w_out.norm(dim=1) / cos.var(dim=1, correction=0)
    top = torch.argsort(score, descending=True)[:3]
    acts = {}

    def grab(module, args):
        acts["a"] = args[0].detach()
    h = blocks[-1].mlp.c_proj.register_forward_pre_hook(grab)
    base_logits = model(input_ids=x).logits
    h.remove()
    means = acts["a"][..., top].mean(dim=(0, 1))  # [3]

    def ablate(module, args):
        a = args[0].clone()
        a[..., top] = means
        return (a,)
    h = blocks[-1].mlp.c_proj.register_forward_pre_hook(ablate)
    abl_logits = model(input_ids=x).logits
    h.remove()

    def ce_h(logits):
        lp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
        ce = -lp.gather(-1, x[:, 1:, None]).mean()
        ent = -(lp.exp() * lp).sum(-1).mean()
        return float(ce), float(ent)

    (ce0, h0), (ce1, h1) = ce_h(base_logits), ce_h(abl_logits)
    return {"sink_rate": sink, "norm_ratios": ratios, "norm_ratio": max(ratios), "neurons": top.tolist(),
            "rel_ce": (ce1 - ce0) / ce0, "rel_entropy": (h1 - h0) / h0}
