"""The paper's schedules for GPT-2 Small, Medium, Large and XL (appendix B, Tables 3 and 4), and one
for Pythia-70M (appendix C; where the paper is silent the choice is stated at the table row).

Each preset's group starts follow from the start of LN_MLP and the gaps:
start_qk = start_mlp + L * gap_mlp, start_v = start_qk + L * gap_qk, start_f = start_v + L * gap_v.
The paper does not state the EMA factor used for sigma_avg on Large and XL; lnfree uses 0.9 there
(and the last step's value on Small and Medium, as the paper describes). Change `sigma_ema` in a
schedule file to use another.
"""

from __future__ import annotations

from pathlib import Path

from .schedule import HParams, Schedule, ScheduleError, fit_schedule

# name: (n_layers, micro batch, grad accum, lr, min lr, aux weight, grad ckpt, warmup, max steps,
#        start mlp, gap mlp, gap qk, gap v, sigma ema)
_TABLE3 = {
    "gpt2": (12, 32, 16, 6e-4, 3e-4, 0.1, True, 25, 300, 20, 2, 2, 3, None),
    "gpt2-medium": (24, 22, 23, 6e-4, 3e-4, 0.1, True, 10, 500, 20, 2, 2, 3, None),
    "gpt2-large": (36, 28, 18, 3e-4, 4e-5, 0.03, False, 15, 1200, 30, 4, 4, 6, 0.9),
    "gpt2-xl": (48, 18, 28, 1e-4, 2e-5, 0.01, False, 20, 1200, 50, 4, 4, 6, 0.9),
    # Appendix C removes LN from Pythia-70M (6 layers, d 512) but gives no schedule. Chosen here:
    # GPT-2 Small's Table 3 row (same size class): its hyperparameters, ~524k tokens per step, and its
    # per-layer pacing (LN_MLP from step 20, gaps 2/2/3), so LN^f goes at step 62 of 300.
    "pythia-70m": (6, 32, 16, 6e-4, 3e-4, 0.1, True, 25, 300, 20, 2, 2, 3, None),
}

HUB_IDS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "pythia-70m": "EleutherAI/pythia-70m",
}


def preset_names() -> list[str]:
    return list(_TABLE3)


def preset(name: str) -> Schedule:
    """The paper's schedule for one GPT-2 size (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`) or Pythia-70M."""
    if name not in _TABLE3:
        raise ScheduleError(f"unknown schedule preset {name!r}; known presets: {', '.join(_TABLE3)} (or 'auto')")
    L, mb, ga, lr, min_lr, aux, ckpt, warmup, max_steps, s_mlp, g_mlp, g_qk, g_v, ema = _TABLE3[name]
    s_qk = s_mlp + L * g_mlp
    s_v = s_qk + L * g_qk
    s_f = s_v + L * g_v
    hp = HParams(
        micro_batch_size=mb,
        grad_accum_steps=ga,
        seq_len=1024,
        lr=lr,
        min_lr=min_lr,
        warmup_steps=warmup,
        max_steps=max_steps,
        weight_decay=0.01,
        aux_weight=aux,
        sigma_ema=ema,
        grad_checkpointing=ckpt,
    )
    return Schedule(
        n_layers=L,
        starts={"mlp": s_mlp, "qk": s_qk, "v": s_v, "f": s_f},
        gaps={"mlp": g_mlp, "qk": g_qk, "v": g_v},
        hparams=hp,
        name=name,
        base_model=name,
    ).validate()


def resolve_schedule(name_or_file: str, n_layers: int | None = None, max_steps: int | None = None) -> Schedule:
    """A preset name, `auto` (needs n_layers and max_steps), or a .yaml/.yml/.json schedule file."""
    if name_or_file in _TABLE3:
        return preset(name_or_file)
    if name_or_file == "auto":
        if n_layers is None:
            raise ScheduleError("`auto` needs the model's layer count (pass a model, or n_layers)")
        return fit_schedule(n_layers, max_steps or 300)
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.exists():
            raise ScheduleError(f"schedule file {path} does not exist")
        return Schedule.load(path)
    raise ScheduleError(
        f"unknown schedule {name_or_file!r}; known presets: {', '.join(_TABLE3)}; or 'auto', "
        "or a .yaml/.json schedule file"
    )
