"""The sizes of the demo suite: ``full`` (the default, <= 10 minutes on a 2-core CPU), ``findings`` (fine-tunes a
shipped, longer-pretrained original) and ``tiny`` (tests).

``full`` is tuned so that, on 2 CPU cores, the whole build stays inside 10 minutes while the
original model's validation loss ends far below the unigram entropy of the corpus and the LN-free
fine-tune ends within 0.15 nats of the vanilla control. The LM head over the compact vocabulary
(15,127 tokens with CPython 3.11.7) dominates the cost, so the model is narrow (3 layers x 128,
2.5M parameters) but has enough layers for the LN-removal schedule (10 events) to mean something.

Measured on the 2-core development machine (CPython 3.11.7, torch 2.13, shared with other
jobs, load average ~3, so the build chose 1 thread): 549 s wall, 505 CPU-seconds (datasets 9,
filter 0.5, init 2, pretrain 289, vanilla 82, ln-free 87, evaluate 36). Mean CE (nats) on
validation / Pile-like / Pile-filtered: original 4.894 / 5.992 / 4.435, vanilla 4.860 / 6.023 /
4.413, LN-free 4.884 / 6.152 / 4.452; unigram entropy of the training split 6.327 (the original
is 1.43 below it); LN-free minus vanilla: +0.025 on validation, +0.129 on the Pile-like set and
+0.039 on the Pile-filtered set (as in the paper, most of the Pile gap goes with the tokens the
training data never shows). Earlier runs with 360/100 and 420/120 steps gave margins of 1.47 and
1.56 nats and LN-free gaps of +0.008 and -0.001, at 592 and 688 CPU-seconds.

``findings`` fine-tunes a shipped original (``original="shipped"``, :mod:`.original`): a GPT-2 of 6 layers x
128 (8 heads, context 128, untied unembedding, 5.1M parameters) pretrained by lnfree's trainer for 2,500
steps of 16 x 128 tokens (5.1M tokens, about 6 passes over the training split; AdamW, LR 6e-3 -> 6e-4
cosine after 100 warm-up steps, weight decay 0.3) on rows that each start with EOT (``row_start_eot``,
GPT-2's packing: a fixed first token) and a training split that also holds 2,500 repeated-span
documents (``repeat_spans``, :mod:`.repeats`, 19% of its tokens). Pretraining took 54 minutes on one
core, too long for a build: the build makes the datasets, installs the original (after checking that
this Python builds the data it was trained on) and runs the two 90-step fine-tunes and the evaluation
(214 s with 2 threads). ``python -m lnfree_core demo pretrain-original`` redoes the pretraining.

Measured on that build (``demo findings``: 32 x 128 pile-filtered-demo tokens; original / vanilla /
LN-free): the first-token centred residual norm is 1.26-2.32x the other positions' / 1.26-2.33x /
1.00-1.18x, the paper's pattern (far above 1 with LayerNorm, about 1 once LN-free); the attention sink
rate is 8.0% / 7.9% / 8.0% (the earlier ``full`` models: about 4%; GPT-2 55.3% -> 45.3%), so the sinks
grew but do not shrink with LN removal; the top-3 confidence-neuron ablation moves entropy by +0.07% /
+0.08% / +0.13% (CE +0.02%): no confidence neurons. Mean CE on validation / Pile-like / Pile-filtered:
original 3.978 / 6.209 / 4.079, vanilla 4.011 / 6.219 / 4.109, LN-free 3.993 / 6.127 / 4.183, so the
LN-free model's gap is -0.018 / -0.092 / +0.074: Table 1's pattern (largest gap on the Pile-like set) is
not kept, which is why ``full`` stays the default.

Why this recipe (issue 13; measured with lnfree's trainer, 32 x 128 pile-filtered-demo tokens, the
paper's sink definition, centred norms, after 1,000 steps): the earlier ``full`` recipe (3 x 128, 4 heads,
tied, 300 steps) shows none of the paper's findings (sinks 3.8% of (layer, head, query) triples with
query 0 left out, norm ratios 0.86-1.26). 4 x 128 x 8 heads, untied, decay 0.1, LR 3e-3: sinks 5.6%
with EOT row starts and 3.5% without, largest first-token norm ratio 1.43 / 1.75 (without EOT only at
the embeddings); 6 x 128 x 8 heads, LR 6e-3, decay 0.3: 5.9%, 1.45; the same with the repeated spans:
6.9%, 2.17. Sinks grow slowly with steps (the 4-layer run: 2.2% at 250 steps, 3.9% at 500, 5.6% at
1,000), and none of these moved the confidence-neuron ablation's entropy by more than 0.25%.

What did not help further (issue 13, second round; the README's demo section has the numbers): 300-step
fine-tunes (sinks 8.5% / 8.1% / 8.5%); an L1 shrinkage or weight decay of the final norm's gain, which
gives the unembedding a null space but no confidence neurons (top-3 ablation +0.05% entropy); marker /
trigger recall pairs that make heads useful only at rare tokens (8.1% at 1,600 steps). Every sink rate
here is read against the 2.3% that uniform attention scores at 128 tokens
(:func:`lnfree_core.analysis.sinks.uniform_rate`), and no head of the shipped original sinks on more than
17% of its queries. The training split (840k tokens, seen about 6 times) is overfitted (training loss
2.24, validation 3.98), so a longer recipe needs a larger corpus and a GPU:
``demo pretrain-original --device cuda``.

``tiny`` exercises every stage in seconds and promises nothing about quality.

``ioi_sentences`` (:mod:`.ioi_text`) adds complete IOI sentences to the training split so that the IOI
patching experiment can run on the demo models: 1,000 in ``full`` (18,040 tokens, 2.7% of the training
tokens; the compact vocabulary grows from 15,127 to 15,233 tokens), 64 in ``tiny`` (every name at least
once). The ``full`` measurements above were taken before this text was added; with it (same machine,
heavier load: 1121 s wall) mean CE on validation / Pile-like / Pile-filtered: original 4.888 / 5.889 /
4.493, vanilla 4.857 / 5.904 / 4.485, LN-free 4.866 / 6.001 / 4.510; unigram entropy 6.343. The models
do not learn IOI (mean clean logit difference about 0 on 480 prompts).

Three settings exist for the paper's other findings (attention sinks, first-token norms, confidence
neurons; see :mod:`.findings`), which the ``full`` models do not show: ``row_start_eot`` (every row
begins with EOT, GPT-2 packing style, so position 0 is a fixed token), ``tie_embeddings`` (False: a
separate unembedding, whose rows get gradient only in the directions the final norm's output uses,
so weight decay can leave it a near-null space) and ``pretrain_weight_decay``; with ``repeat_spans`` and
``original`` they make the ``findings`` size. ``full`` keeps them at the values it was measured with
(False, True, 0.01); ``tiny`` turns the first two on so the tests run their code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class DemoSize:
    """Every setting of a demo build that changes what it produces."""

    name: str
    # corpora and datasets
    prose_chars: int | None  # characters of the OWT-like corpus used (None: all of it)
    val_every: int  # OWT-like document i (in corpus order) is validation when i % val_every == 0
    pile_rows: int  # Pile-like sequences made (all are scanned by the filter)
    seq_len: int  # tokens per sequence = the models' context length
    row_start_eot: bool  # every row begins with EOT (GPT-2 packing style): a fixed first token to sink attention on
    eval_rows: int  # sequences evaluated per dataset (at most)
    filter_keep: int  # Pile-filtered sequences kept (at most)
    # model (GPT-2 architecture)
    n_layer: int
    n_embd: int
    n_head: int
    tie_embeddings: bool  # unembedding = token embedding (GPT-2's choice) or a separate matrix
    # pretraining the original from scratch
    pretrain_steps: int
    pretrain_lr: float
    pretrain_min_lr: float
    pretrain_warmup: int
    pretrain_weight_decay: float  # AdamW decay on weight matrices while pretraining (fine-tunes: the paper's 0.01)
    # the two fine-tunes (vanilla control and LN removal), same steps, data and LR schedule
    finetune_steps: int
    finetune_lr: float
    finetune_min_lr: float
    finetune_warmup: int
    aux_weight: float
    batch_size: int  # sequences per optimizer step (one micro-batch)
    seed: int = 0
    # IOI sentences (lnfree_core.demo.ioi_text) added to the OWT-like training split: every IOI prompt token
    # is then in the compact vocabulary, so the IOI patching experiment (section 5.2) runs on the demo
    ioi_sentences: int = 0
    # documents "span span EOT" added to the training split (lnfree_core.demo.repeats): they reward induction
    # heads, whose attention parks on position 0 where the current token has no earlier copy (attention sinks)
    repeat_spans: int = 0
    # where models/original comes from: "pretrain" (the build pretrains it from work/init with the settings
    # above) or "shipped" (lnfree_core/demo/original: pretrained with the same settings by the project, used
    # when it was trained on this build's data, else pretrained here; see lnfree_core.demo.original)
    original: str = "pretrain"

    def __post_init__(self):
        if self.original not in ("pretrain", "shipped"):
            raise ValueError(f"DemoSize.original is 'pretrain' or 'shipped', not {self.original!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pretrain_tokens(self) -> int:
        return self.pretrain_steps * self.batch_size * self.seq_len

    @property
    def finetune_tokens(self) -> int:
        return self.finetune_steps * self.batch_size * self.seq_len


SIZES = {
    "full": DemoSize(
        name="full", prose_chars=None, val_every=20, pile_rows=3_000, seq_len=128, row_start_eot=False,
        eval_rows=160, filter_keep=160, n_layer=3, n_embd=128, n_head=4,
        tie_embeddings=True, pretrain_steps=300, pretrain_lr=3e-3, pretrain_min_lr=3e-4, pretrain_warmup=20,
        pretrain_weight_decay=0.01,
        finetune_steps=90, finetune_lr=1e-3, finetune_min_lr=3e-4, finetune_warmup=8, aux_weight=0.1,
        batch_size=16, ioi_sentences=1000,
    ),
    "tiny": DemoSize(
        name="tiny", prose_chars=120_000, val_every=8, pile_rows=480, seq_len=32, row_start_eot=True,
        eval_rows=24, filter_keep=24, n_layer=2, n_embd=32, n_head=2,
        tie_embeddings=False, pretrain_steps=24, pretrain_lr=3e-3, pretrain_min_lr=1e-3, pretrain_warmup=2,
        pretrain_weight_decay=0.01,
        finetune_steps=16, finetune_lr=1e-3, finetune_min_lr=3e-4, finetune_warmup=1, aux_weight=0.1,
        batch_size=8, ioi_sentences=64,
    ),
}

# findings: the full size's data and fine-tunes, with the shipped original (the settings it was pretrained with)
SIZES["findings"] = replace(
    SIZES["full"], name="findings", row_start_eot=True, n_layer=6, n_head=8, tie_embeddings=False,
    pretrain_steps=2_500, pretrain_lr=6e-3, pretrain_min_lr=6e-4, pretrain_warmup=100, pretrain_weight_decay=0.3,
    repeat_spans=2_500, original="shipped")


def get_size(name: str) -> DemoSize:
    """The named size (``full`` or ``tiny``); ValueError listing the names otherwise."""
    if name not in SIZES:
        raise ValueError(f"unknown demo size {name!r}; known: {', '.join(SIZES)}")
    return SIZES[name]
