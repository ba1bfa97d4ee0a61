"""The paper's schedules for GPT-2 Small, Medium, Large and XL (appendix B, Tables 3 and 4), set up as
the released models were trained by the authors' code, and one for Pythia-70M (appendix C; where the
paper is silent the choice is stated at the table row).

Each preset's group starts follow from the start of LN_MLP and the gaps:
start_qk = start_mlp + L * gap_mlp, start_v = start_qk + L * gap_qk, start_f = start_v + L * gap_v
(schedule.back_to_back_starts).

sigma_avg averaging. The paper names an EMA for Large/XL (B.1) without its factor. The reference code
updates an EMA at every LayerNorm *call* with momentum m per call of a micro-batch of mb sequences of
1024 tokens: m = 0.9 ** (mb / 32) on Large/XL (0.9 per 32 x 1024 = 32,768 tokens), the default m = 0.9
on Small/Medium (0.9 per mb x 1024 tokens). A block is called more than once per micro-batch there:
ln_1 serves both the qk and the v path (two calls), and on Small/Medium gradient checkpointing re-runs
each block's forward in the backward pass (twice again for ln_1 and ln_2, not for ln_f). lnfree
expresses this as a memory in tokens per block kind (`sigma_ema_tokens`: the factor 0.9 applies per that
many tokens through the block), so one optimizer step keeps

    k_step(kind) = 0.9 ** (tokens per step / sigma_ema_tokens[kind])

of the old value: on Large and XL 0.19 (LN_MLP, LN_f) and 0.036 (LN_qk, LN_v); on Small
0.034, 0.0012, 0.19; on Medium 0.0079, 6e-5, 0.089 (`lnfree schedule show` prints them). Unlike the
reference's per-call form, this does not change with micro-batch size, accumulation or GPU count.

Other settings the released models were trained with (the reference ran the HF Trainer): AdamW betas
(0.9, 0.999); end-of-text targets masked in the training loss (its collator pads with eos); weight decay
0.01 also on FakeLN gamma (the Trainer exempts only nn.LayerNorm weights and biases); and the release
checkpoints (steps 300, 500, 600, 800; Large and XL are 1200-step runs) kept by `keep_steps`.
"""

from __future__ import annotations

from pathlib import Path

from .schedule import HParams, Schedule, ScheduleError, back_to_back_starts, fit_schedule

# name: (n_layers, micro batch, grad accum, lr, min lr, aux weight, grad ckpt, warmup, max steps,
#        start mlp, gap mlp, gap qk, gap v, release step)
_TABLE3 = {
    "gpt2": (12, 32, 16, 6e-4, 3e-4, 0.1, True, 25, 300, 20, 2, 2, 3, 300),
    "gpt2-medium": (24, 22, 23, 6e-4, 3e-4, 0.1, True, 10, 500, 20, 2, 2, 3, 500),
    "gpt2-large": (36, 28, 18, 3e-4, 4e-5, 0.03, False, 15, 1200, 30, 4, 4, 6, 600),
    "gpt2-xl": (48, 18, 28, 1e-4, 2e-5, 0.01, False, 20, 1200, 50, 4, 4, 6, 800),
    # Appendix C removes LN from Pythia-70M (6 layers, d 512) but gives no schedule. Chosen here:
    # GPT-2 Small's Table 3 row (same size class): its hyperparameters, ~524k tokens per step, and its
    # per-layer pacing (LN_MLP from step 20, gaps 2/2/3), so LN^f goes at step 62 of 300.
    # The sigma EMA and release step follow GPT-2 Small's row too (the reference's Small setting).
    "pythia-70m": (6, 32, 16, 6e-4, 3e-4, 0.1, True, 25, 300, 20, 2, 2, 3, 300),
}
REFERENCE_SEQ_LEN = 1024
REFERENCE_EMA = 0.9


def reference_ema_tokens(micro_batch: int, grad_checkpointing: bool, large: bool) -> dict[str, int]:
    """Tokens per EMA factor 0.9, per block kind, that reproduce the reference's per-call momentum.

    One call of a micro-batch moves sigma by m = 0.9 ** (tokens_per_call / T) with T = 32 * 1024 on
    Large/XL (m = 0.9 ** (mb / 32)) and T = mb * 1024 on Small/Medium (m = 0.9); a block called c times
    per micro-batch on the same tokens sees c * mb * 1024 "tokens" per micro-batch, i.e. T / c here.
    """
    unit = 32 * REFERENCE_SEQ_LEN if large else micro_batch * REFERENCE_SEQ_LEN
    ckpt = 2 if grad_checkpointing else 1  # the block's forward runs again in the backward pass
    calls = {"mlp": ckpt, "qk": 2 * ckpt, "v": 2 * ckpt, "f": 1}  # ln_1 serves qk and v: two calls
    return {kind: unit // c for kind, c in calls.items()}


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
    L, mb, ga, lr, min_lr, aux, ckpt, warmup, max_steps, s_mlp, g_mlp, g_qk, g_v, release = _TABLE3[name]
    gaps = {"mlp": g_mlp, "qk": g_qk, "v": g_v}
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
        sigma_ema=REFERENCE_EMA,
        sigma_ema_tokens=reference_ema_tokens(mb, ckpt, large=name in ("gpt2-large", "gpt2-xl")),
        grad_checkpointing=ckpt,
        adam_betas=(0.9, 0.999),
        mask_eot_labels=True,
        weight_decay_fakeln_gain=True,
        keep_steps=[release],
    )
    return Schedule(n_layers=L, starts=back_to_back_starts(L, s_mlp, gaps), gaps=gaps, hparams=hp, name=name,
                    base_model=name).validate()


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
