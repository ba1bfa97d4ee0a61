"""Cached entry points: (model spec, data) -> result, computed once and then read from the cache.

The app and the CLI call these. Each loads the model and the tokens only on a cache miss, runs one
analysis function (ce.py, first_token.py, confidence.py + neuron_ablation.py, dla.py) and stores its
arrays; cheap statistics that have parameters (sink threshold among SINK_THRESHOLDS, sink definition and
interval, norm kind, NMAE granularity/positions/pooling, bootstrap) are computed from the stored arrays on
every call, so changing them never recomputes a forward pass. Settings that change a forward pass are in
the cache key (precision, sink thresholds, confidence top-k/processing/ablated neurons, centred W_U).

`model` is a spec string for `lnfree_core.models.load_model` or an already loaded `LoadedModel`
(identified by its spec). `data` is a `DataSpec`. `progress(done, total)` reports sequences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .. import models
from ..data import DatasetNotFoundError, load_sequences, resolve_dataset
from ..data.model_fit import check_tokenizer_fit
from ..method.adapters import adapter_for
from ..models import LoadedModel
from .cache import CACHE_VERSION, DEFAULT_CACHE_DIR, AnalysisCache, CacheEntry, model_identity, path_identity, tokens_identity
from .ce import per_token_ce
from .ce_summary import CESummary, summarize_ce
from .confidence import ConfidenceScores, UnembedSVD, confidence_scores, unembed_svd
from .dla import HeadAttribution, head_attribution
from .first_token import FirstTokenStats, SINK_THRESHOLDS, first_token_stats
from .neuron_ablation import AblationResult, ablate_neurons
from .nmae import nmae
from .runtime import Progress, model_device, resolve_device, resolve_precision
from .sinks import DEFINITIONS, sink_rate, sink_rate_from_counts


class EmptyDataError(ValueError):
    """The data holds no sequence of the requested length."""


@dataclass(frozen=True)
class DataSpec:
    """Token sequences: `n` sequences of `seq_len` tokens of a dataset's split (None: the dataset's
    evaluation split / evaluation size), read with `lnfree_core.data.load_sequences`; or, when `tokens`
    is given, that array [n, seq_len] itself (`dataset` is then only its label)."""

    dataset: str
    split: str | None = None
    n: int | None = None
    seq_len: int = 1024
    tokens: np.ndarray | None = field(default=None, compare=False, repr=False)

    def identity(self) -> dict:
        ident: dict = {"dataset": self.dataset}
        if self.tokens is not None:
            return {**ident, **tokens_identity(self.tokens)}

        try:
            spec = resolve_dataset(self.dataset)
        except DatasetNotFoundError:
            spec = None  # reported when the data is read
        if spec is not None and spec.source == "local" and spec.path:
            ident.update(path_identity(spec.path))  # local files: their stamps are part of the key
        return {**ident, "split": self.split, "n": self.n, "seq_len": self.seq_len}

    def check_fit(self, model_type: str) -> None:
        """Raise data.model_fit.TokenizerMismatchError when a registry dataset (GPT-2 ids) meets a model
        of another family; given token arrays are the caller's responsibility."""
        if self.tokens is None:
            check_tokenizer_fit(model_type, self.dataset)

    def load(self) -> np.ndarray:
        """The tokens [n, seq_len]; raises EmptyDataError when there are none."""
        if self.tokens is not None:
            toks = np.asarray(self.tokens)
        else:
            toks = load_sequences(self.dataset, split=self.split, seq_len=self.seq_len, n_sequences=self.n)
        if toks.ndim != 2 or toks.shape[0] == 0:
            raise EmptyDataError(f"{self.dataset}: no sequences of {self.seq_len} tokens to analyse "
                                 f"(got an array of shape {toks.shape}); use a shorter --seq-len or more data")
        return toks


class _Run:
    """One cached computation: key, cache lookup, lazy model/tokens on a miss."""

    def __init__(self, kind: str, model: str | LoadedModel, data: DataSpec, settings: dict,
                 cache_dir: str | os.PathLike | None, device: str):
        self.kind, self.model, self.data, self.device = kind, model, data, device
        spec = model.spec if isinstance(model, LoadedModel) else model
        self.key = {"kind": kind, "version": CACHE_VERSION, "model": model_identity(spec), "data": data.identity(),
                    "settings": settings}
        self.cache = AnalysisCache(cache_dir)

    def lookup(self, refresh: bool) -> CacheEntry | None:
        return None if refresh else self.cache.get(self.kind, self.key)

    def loaded(self) -> LoadedModel:
        if isinstance(self.model, LoadedModel):
            return self.model
        self.model = models.load_model(self.model, device=resolve_device(self.device))  # looked up when called
        return self.model

    def inputs(self) -> tuple[LoadedModel, np.ndarray]:
        """The model, then the tokens: a bad spec fails before a long data read."""
        lm = self.loaded()
        self.data.check_fit(lm.model.config.model_type)  # GPT-2 ids for a Pythia/Llama/Qwen model: refuse
        return lm, self.data.load()

    def store(self, meta: dict, arrays: dict[str, np.ndarray]) -> CacheEntry:
        lm = self.loaded()
        base = {"model": lm.spec, "label": lm.label, "ln_free": bool(lm.ln_free), "dataset": self.data.dataset}
        return self.cache.put(self.kind, self.key, {**base, **meta}, arrays)


def _precision(model: str | LoadedModel, device: str, precision: str) -> str:
    """The resolved precision on the device the model will run on (a loaded model's own device)."""
    if isinstance(model, LoadedModel):
        return resolve_precision(precision, model_device(model.model))
    return resolve_precision(precision, resolve_device(device))


def _hit(entry: CacheEntry, progress: Progress | None) -> CacheEntry:
    if progress is not None:
        n = int(entry.meta.get("n_sequences", 0))
        progress(n, n)
    return entry


def _start(kind: str, model: str | LoadedModel, data: DataSpec, settings: dict, *,
           cache_dir: str | os.PathLike | None, device: str, precision: str, refresh: bool,
           progress: Progress | None) -> tuple[_Run, str, CacheEntry | None]:
    """(the computation of `kind` keyed by the resolved precision and `settings`, that precision, its
    cached entry or None on a miss); a hit is reported to `progress` as complete."""
    prec = _precision(model, device, precision)
    run = _Run(kind, model, data, {"precision": prec, **settings}, cache_dir, device)
    entry = run.lookup(refresh)
    return run, prec, None if entry is None else _hit(entry, progress)


def _sizes(tokens: np.ndarray) -> dict:
    return {"n_sequences": int(tokens.shape[0]), "seq_len": int(tokens.shape[1])}


# ------------------------------------------------------------------ cross-entropy
class EntryResult:
    """What every cached result reads from its entry's meta: the model's label and whether it is LN-free."""

    entry: CacheEntry

    @property
    def label(self) -> str:
        return self.entry.meta["label"]

    @property
    def ln_free(self) -> bool:
        return bool(self.entry.meta["ln_free"])


@dataclass
class CEResult(EntryResult):
    entry: CacheEntry

    @property
    def summary(self) -> CESummary:
        return CESummary.from_dict(self.entry.meta["summary"])

    @property
    def losses(self) -> np.ndarray:
        """Per-token CE, float32 [n, seq_len - 1] (memory-mapped from the cache).

        float32, not float16: float16 saturates at 65504, and the outliers of appendix E.1 reach 5e6.
        """
        return self.entry.array("losses")

    @property
    def tokens(self) -> np.ndarray:
        """The evaluated tokens [n, seq_len] (uint16 when every id fits, else int32)."""
        return self.entry.array("tokens")

    def to_json(self) -> dict:
        """{"model", "dataset", "tokens", "mean", "median", "p2.5-97.5", "p1-99", "p0.1-99.9"} (+ label, ln_free,
        n_sequences)."""
        s = self.summary.to_dict()
        m = self.entry.meta
        return {"model": m["model"], "dataset": m["dataset"], **s, "label": m["label"], "ln_free": m["ln_free"],
                "n_sequences": m["n_sequences"]}


def ce_eval(model: str | LoadedModel, data: DataSpec, *, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
            device: str = "auto", precision: str = "auto", batch_size: int = 8, progress: Progress | None = None,
            refresh: bool = False) -> CEResult:
    """Per-token CE (ce.py) and its summary (ce_summary.py), cached."""
    run, prec, entry = _start("ce", model, data, {}, cache_dir=cache_dir, device=device, precision=precision,
                              refresh=refresh, progress=progress)
    if entry is not None:
        return CEResult(entry)
    lm, tokens = run.inputs()
    losses = per_token_ce(lm.model, tokens, batch_size=batch_size, precision=prec, progress=progress).numpy()
    tok_dtype = np.uint16 if tokens.size and int(tokens.max()) < 2**16 and int(tokens.min()) >= 0 else np.int32
    meta = {**_sizes(tokens), "precision": prec, "summary": summarize_ce(losses).to_dict()}
    return CEResult(run.store(meta, {"losses": losses.astype(np.float32), "tokens": tokens.astype(tok_dtype)}))


# ------------------------------------------------------------------ first-token norms and attention sinks
@dataclass
class FirstTokenResult:
    entry: CacheEntry

    @property
    def stats(self):
        e = self.entry
        arr = {k: np.asarray(e.array(k)) for k in ("first_norm", "rest_norm", "first_attn", "first_norm_raw",
                                                      "rest_norm_raw", "sink_counts")}
        return FirstTokenStats(points=list(e.meta["points"]), n_queries=int(e.meta["seq_len"]), **arr)

    def sink_rate(self, threshold: float = 0.3, *, definition: str = "query", ci_method: str | None = None,
                  ci_batch: int = 8, n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
        """Sink rate (sinks.py). definition "query" (the paper's, default) or "head-mean"; ci_method
        "batches" (the paper's spread over batches of ci_batch sequences; default for "query") or
        "bootstrap" (default for "head-mean")."""
        if definition == "query":
            st = self.stats
            return sink_rate_from_counts(st.sink_counts, st.n_queries, self.entry.meta["sink_thresholds"], threshold,
                                         ci_method=ci_method or "batches", ci_batch=ci_batch, n_boot=n_boot, ci=ci,
                                         seed=seed)
        if definition == "head-mean":
            return sink_rate(self.stats.first_attn, threshold, ci_method=ci_method or "bootstrap", ci_batch=ci_batch,
                             n_boot=n_boot, ci=ci, seed=seed, seq_len=self.stats.n_queries)
        raise ValueError(f"sink definition must be one of {DEFINITIONS}, got {definition!r}")

    def to_json(self, threshold: float = 0.3, n_boot: int = 1000, *, norm: str = "centred",
                definition: str = "query", ci_method: str | None = None) -> dict:
        m = self.entry.meta
        return {"model": m["model"], "label": m["label"], "ln_free": m["ln_free"], "dataset": m["dataset"],
                "n_sequences": m["n_sequences"], "norms": self.stats.profile(norm),
                "sinks": self.sink_rate(threshold, definition=definition, ci_method=ci_method,
                                        n_boot=n_boot).to_dict()}


def first_token_eval(model: str | LoadedModel, data: DataSpec, *,
                     cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, device: str = "auto",
                     precision: str = "fp32", batch_size: int = 4, progress: Progress | None = None,
                     refresh: bool = False) -> FirstTokenResult:
    """First-token residual norms (centred and raw, resid_pre/mid/post) and attention to the first token
    (head means and sink counts at every threshold of SINK_THRESHOLDS; first_token.py), cached."""
    run, prec, entry = _start("first_token", model, data, {"sink_thresholds": list(SINK_THRESHOLDS)},
                              cache_dir=cache_dir, device=device, precision=precision, refresh=refresh,
                              progress=progress)
    if entry is not None:
        return FirstTokenResult(entry)
    lm, tokens = run.inputs()
    st = first_token_stats(lm.model, tokens, batch_size=batch_size, precision=prec, progress=progress)
    meta = {**_sizes(tokens), "points": st.points, "sink_thresholds": list(SINK_THRESHOLDS)}
    return FirstTokenResult(run.store(meta, {"first_norm": st.first_norm, "rest_norm": st.rest_norm,
                                             "first_norm_raw": st.first_norm_raw, "rest_norm_raw": st.rest_norm_raw,
                                             "first_attn": st.first_attn, "sink_counts": st.sink_counts}))


# ------------------------------------------------------------------ confidence neurons
@dataclass
class ConfidenceResult:
    entry: CacheEntry

    @property
    def scores(self):
        e = self.entry
        return ConfidenceScores(norm=np.asarray(e.array("norm")), logit_var=np.asarray(e.array("logit_var")),
                                score=np.asarray(e.array("score")))

    @property
    def top(self) -> list[int]:
        return list(self.entry.meta["top"])

    @property
    def svd(self):
        return UnembedSVD(singular_values=np.asarray(self.entry.array("singular_values")), neurons=self.ablated,
                          cosines=np.asarray(self.entry.array("cosines")))

    @property
    def ablated(self) -> list[int]:
        """The neurons that were ablated: `top`, or the neurons given (e.g. the first model's top-k)."""
        return list(self.entry.meta.get("ablated", self.top))

    @property
    def ablation(self):
        abl = AblationResult.from_dict(self.entry.meta["ablation"])
        if "token_delta_ce" in self.entry.arrays():
            abl.token_delta_ce = np.asarray(self.entry.array("token_delta_ce"))
        return abl

    def to_json(self) -> dict:
        m, sc = self.entry.meta, self.scores
        return {"model": m["model"], "label": m["label"], "ln_free": m["ln_free"], "dataset": m["dataset"],
                "n_sequences": m["n_sequences"], "layer": m["layer"], "ablated": self.ablated,
                "top": [{"neuron": i, "score": float(sc.score[i]), "norm": float(sc.norm[i]),
                         "logit_var": float(sc.logit_var[i])} for i in self.top],
                "ablation": m["ablation"],
                "svd": {"singular_values": self.svd.singular_values.tolist(), "cosines": self.svd.cosines.tolist()}}


def confidence_eval(model: str | LoadedModel, data: DataSpec, *, top_k: int = 3, fold_ln: bool = True,
                    center: bool = True, neurons: list[int] | None = None,
                    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, device: str = "auto",
                    precision: str = "fp32", batch_size: int = 4, progress: Progress | None = None,
                    refresh: bool = False) -> ConfidenceResult:
    """CN scores of the last MLP layer, mean ablations and the W_U SVD, cached.

    neurons: the last-layer neurons to ablate (and whose SVD cosines to report). None: this model's own
    top-k by CN score. The paper ablates the same neurons in every variant (they persist across them):
    pass the first model's `top` to the others (what the app and `analyze confidence` do by default)."""
    chosen = None if neurons is None else [int(i) for i in neurons]
    run, prec, entry = _start("confidence", model, data, {"top_k": top_k, "fold_ln": fold_ln, "center": center,
                                                          "neurons": chosen},
                              cache_dir=cache_dir, device=device, precision=precision, refresh=refresh,
                              progress=progress)
    if entry is not None:
        return ConfidenceResult(entry)
    lm, tokens = run.inputs()
    m = lm.model
    sc = confidence_scores(m, fold_ln=fold_ln, center=center)
    top = sc.top(top_k)
    ablated = top if chosen is None else chosen
    bad = [i for i in ablated if not 0 <= i < len(sc.score)]
    if bad:
        raise ValueError(f"neurons {bad} are not in the last MLP layer of {run.loaded().spec} "
                         f"({len(sc.score)} neurons); choose them from a model of the same size")
    svd = unembed_svd(m, ablated, fold_ln=fold_ln, center=center)
    abl = ablate_neurons(m, tokens, ablated, batch_size=batch_size, precision=prec, progress=progress)
    meta = {**_sizes(tokens), "layer": adapter_for(m).n_layers(m) - 1, "top": top, "ablated": ablated,
            "ablation": abl.to_dict()}
    arrays = {"norm": sc.norm, "logit_var": sc.logit_var, "score": sc.score,
              "singular_values": svd.singular_values, "cosines": svd.cosines}
    if abl.token_delta_ce is not None:
        arrays["token_delta_ce"] = abl.token_delta_ce
    return ConfidenceResult(run.store(meta, arrays))


# ------------------------------------------------------------------ DLA vs DE
@dataclass
class DLAResult:
    entry: CacheEntry

    @property
    def attribution(self):
        e = self.entry
        return HeadAttribution(**{k: np.asarray(e.array(k)) for k in ("dla", "de", "abs_err", "abs_de",
                                                                       "dla_last", "de_last")},
                               positions=int(e.meta["seq_len"]) - 1)

    def nmae(self, granularity: str = "sequence", *, positions: str = "all", pooling: str = "mean",
             n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
        return nmae(self.attribution, granularity, positions=positions, pooling=pooling, n_boot=n_boot, ci=ci,
                    seed=seed)

    def to_json(self, granularity: str = "sequence", n_boot: int = 1000, *, positions: str = "all",
                pooling: str = "mean") -> dict:
        m = self.entry.meta
        return {"model": m["model"], "label": m["label"], "ln_free": m["ln_free"], "dataset": m["dataset"],
                "n_sequences": m["n_sequences"], "center_unembed": bool(self.entry.key["settings"].get("center_unembed")),
                "nmae": self.nmae(granularity, positions=positions, pooling=pooling, n_boot=n_boot).to_dict()}


def dla_eval(model: str | LoadedModel, data: DataSpec, *, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
             device: str = "auto", precision: str = "fp32", batch_size: int = 4, center_unembed: bool = False,
             progress: Progress | None = None, refresh: bool = False) -> DLAResult:
    """Per-head DLA and DE of the correct-token logit (dla.py; center_unembed: with a centred W_U), cached."""
    run, prec, entry = _start("dla", model, data, {"center_unembed": bool(center_unembed)}, cache_dir=cache_dir,
                              device=device, precision=precision, refresh=refresh, progress=progress)
    if entry is not None:
        return DLAResult(entry)
    lm, tokens = run.inputs()
    at = head_attribution(lm.model, tokens, batch_size=batch_size, precision=prec, center_unembed=center_unembed,
                          progress=progress)
    meta = _sizes(tokens)
    return DLAResult(run.store(meta, {k: getattr(at, k) for k in ("dla", "de", "abs_err", "abs_de", "dla_last",
                                                                     "de_last")}))
