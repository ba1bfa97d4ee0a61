"""lnfree's evaluation and analysis library: CE, high-loss samples, first-token norms and attention
sinks, confidence neurons, DLA vs direct effect (paper sections 4, 5.1, 5.3; appendices E.1, G, H).

Library functions take a model (a transformers causal LM, with or without FakeLN surgery) and
tokens [n_sequences, seq_len]; `cached` wraps them with model loading, dataset reading and an on-disk
cache (cache.py). One idea per module:

    runtime      batching, device, precision (bf16 autocast on CUDA / fp32 on CPU), progress callbacks
    hooks        residual-stream capture, forward hooks, eager attention on demand
    ce           per-token cross-entropy (and entropy) of next-token predictions
    ce_summary   mean, median and the 2.5-97.5, 1-99, 0.1-99.9 percentile ranges
    tables       Table 1: best per dataset marked, LN-free gaps in brackets; Markdown and CSV
    outliers     high-loss sequences, per-token listings, first token above a CE threshold (app. E.1)
    first_token  first-position norms at resid_pre/mid/post (centred, raw) and attention to it (section 5.3)
    sinks        attention sink rate (per layer/head/query, as the paper) with its interval
    confidence   confidence-neuron scores (eq. 11-12) and the unembedding SVD (app. H, Fig. 7)
    neuron_ablation  mean ablation of last-layer neurons: per-token and mean change in CE, entropy (Fig. 8-9)
    dla          per-head DLA (eq. 5) and direct effect (eq. 4)
    nmae         NMAE per head and overall (eq. 9-10, and the alternative readings) with a bootstrap CI
    stats        percentile bootstrap over sequences
    cache        on-disk cache keyed by model identity, data and settings
    cached       cached entry points used by the CLI and the app
    ioi          IOI prompts of one token layout, all name orderings (section 5.2)
    patching     activation vs attribution patching of resid_pre, improvement score (section 5.2, Fig. 2)
    overconfidence  entropy vs CE, reliability diagram, ECE (sections 5.4, 6.1)
    benchmarks   BoolQ, HellaSwag, PIQA, WinoGrande through lm-eval, local task data (appendix F)
    cached_experiments  cached entry points of ioi/patching, overconfidence and benchmarks
"""
