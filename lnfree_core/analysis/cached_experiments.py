"""Cached entry points of the IOI patching and overconfidence experiments (sections 5.2, 5.4/6.1),
on the cache and model handling of cached.py: (model spec or LoadedModel, data) -> result, computed
once. Statistics with parameters (reliability bins, the improvement score's model pair) are computed
from the stored arrays on every call.

Cache kinds: "ioi_patching" (arrays ld_clean, ld_corrupt [n], act, attr [n, L, T], clean, corrupt
[n, T], io, s [n]) and "overconfidence" (ce, entropy, confidence float32 [n, T-1], correct uint8).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import yaml

from ..data import load_gpt2_tokenizer
from ..data.model_fit import TokenizerMismatchError
from ..data.vocab_map import load_vocab_map
from ..models import LoadedModel, resolve_checkpoint
from .benchmarks import TaskScore, evaluate_tasks, require_lm_eval
from .cache import DEFAULT_CACHE_DIR, CacheEntry, path_identity, tokens_identity
from .cached import DataSpec, EntryResult, _sizes, _start
from .ioi import DEFAULT_N_PROMPTS, DEFAULT_TEMPLATES, build_ioi_prompts
from .overconfidence import TokenCalibration, reliability, summarize_calibration, token_calibration
from .patching import PatchingResult, patch_residual
from .runtime import Progress


def _vocab_map(spec: str) -> np.ndarray | None:
    return load_vocab_map(spec)


@dataclass(frozen=True)
class IOIData:
    """The IOI prompt set of ioi.py: `n` prompts drawn with `seed` from `templates`, in the vocabulary
    of the model `spec` (its compact vocabulary when it has a vocab_map)."""

    spec: str
    n: int = DEFAULT_N_PROMPTS
    seed: int = 0
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    dataset: str = "ioi"

    def identity(self) -> dict:
        vmap = _vocab_map(self.spec)
        return {"dataset": "ioi", "n": self.n, "seed": self.seed, "templates": list(self.templates),
                "vocab_map": None if vmap is None else tokens_identity(vmap[None, :])["tokens_sha256"]}

    def check_fit(self, model_type: str) -> None:
        """The prompts are GPT-2 token ids: refuse a model of another family (its ids mean other words)."""
        if model_type != "gpt2":
            raise TokenizerMismatchError(
                f"IOI patching is available for GPT-2 models only: its prompts are built from GPT-2 tokens "
                f"(single-token names), and {self.spec} is a {model_type} model with another vocabulary")

    def load(self):
        return build_ioi_prompts(self.n, self.seed, templates=self.templates, vocab_map=_vocab_map(self.spec))


@dataclass
class IOIResult(EntryResult):
    entry: CacheEntry

    @property
    def patching(self):
        e = self.entry
        return PatchingResult(**{k: np.asarray(e.array(k)) for k in ("ld_clean", "ld_corrupt", "act", "attr")},
                              seconds=dict(e.meta["seconds"]))

    @property
    def labels(self) -> list[str]:
        """A label per position ("0:While", "1:name1", ...)."""
        return list(self.entry.meta["labels"])

    def to_json(self) -> dict:
        m, p = self.entry.meta, self.patching
        return {"model": m["model"], "label": m["label"], "ln_free": m["ln_free"], "n_prompts": m["n_sequences"],
                "seed": m["seed"], "positions": m["labels"], "ld_clean": float(p.ld_clean.mean()),
                "ld_corrupt": float(p.ld_corrupt.mean()), "activation": p.normalised("act").tolist(),
                "attribution": p.normalised("attr").tolist(), "error": p.error.tolist(),
                "layer_abs_error": p.layer_abs_error().tolist(), "seconds": m["seconds"]}


def ioi_eval(model: str | LoadedModel, *, n: int = DEFAULT_N_PROMPTS, seed: int = 0,
             templates: tuple[str, ...] = DEFAULT_TEMPLATES, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
             device: str = "auto", precision: str = "fp32", batch_size: int = 16, rows_per_forward: int = 256,
             progress: Progress | None = None, refresh: bool = False) -> IOIResult:
    """Activation and attribution patching of resid_pre on the IOI prompt set (patching.py), cached."""
    spec = model.spec if isinstance(model, LoadedModel) else model
    data = IOIData(spec, n=n, seed=seed, templates=tuple(templates))
    run, prec, entry = _start("ioi_patching", model, data, {}, cache_dir=cache_dir, device=device,
                              precision=precision, refresh=refresh, progress=progress)  # type: ignore[arg-type]
    if entry is not None:
        return IOIResult(entry)
    lm, prompts = run.inputs()
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    if int(max(prompts.clean.max(), prompts.corrupt.max())) >= vocab:
        raise ValueError(f"IOI is unavailable for {spec}: its vocabulary has {vocab} tokens and no vocab_map.json "
                         "maps GPT-2 ids into it (the IOI prompts are GPT-2 tokens)")
    res = patch_residual(lm.model, prompts.clean, prompts.corrupt, prompts.io, prompts.s, batch_size=batch_size,
                         rows_per_forward=rows_per_forward, precision=prec, progress=progress)
    meta = {**_sizes(prompts.clean), "seed": seed, "labels": prompts.labels, "positions": prompts.positions,
            "seconds": res.seconds, "precision": prec, "example": prompts.texts[0]}
    arrays = {"ld_clean": res.ld_clean, "ld_corrupt": res.ld_corrupt, "act": res.act, "attr": res.attr,
              "clean": prompts.clean, "corrupt": prompts.corrupt, "io": prompts.io, "s": prompts.s}
    return IOIResult(run.store(meta, arrays))


# ------------------------------------------------------------------ overconfidence
@dataclass
class OverconfidenceResult(EntryResult):
    entry: CacheEntry

    @property
    def calibration(self):
        e = self.entry
        return TokenCalibration(ce=e.array("ce"), entropy=e.array("entropy"), confidence=e.array("confidence"),
                                correct=e.array("correct").astype(bool))

    def summary(self, n_bins: int = 15):
        return summarize_calibration(self.calibration, n_bins)

    def reliability(self, n_bins: int = 15):
        cal = self.calibration
        return reliability(cal.confidence, cal.correct, n_bins)

    def to_json(self, n_bins: int = 15) -> dict:
        m = self.entry.meta
        return {"model": m["model"], "label": m["label"], "ln_free": m["ln_free"], "dataset": m["dataset"],
                "n_sequences": m["n_sequences"], **self.summary(n_bins).to_dict(),
                "reliability": self.reliability(n_bins).to_dict()}


def overconfidence_eval(model: str | LoadedModel, data: DataSpec, *,
                        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, device: str = "auto",
                        precision: str = "auto", batch_size: int = 8, progress: Progress | None = None,
                        refresh: bool = False) -> OverconfidenceResult:
    """Per-token CE, entropy, top-token confidence and correctness (overconfidence.py), cached."""
    run, prec, entry = _start("overconfidence", model, data, {}, cache_dir=cache_dir, device=device,
                              precision=precision, refresh=refresh, progress=progress)
    if entry is not None:
        return OverconfidenceResult(entry)
    lm, tokens = run.inputs()
    cal = token_calibration(lm.model, tokens, batch_size=batch_size, precision=prec, progress=progress)
    meta = {**_sizes(tokens), "precision": prec}
    return OverconfidenceResult(run.store(meta, {"ce": cal.ce, "entropy": cal.entropy, "confidence": cal.confidence,
                                                 "correct": cal.correct.astype(np.uint8)}))


def ablation_gap(vanilla_ablation: dict, ln_free_calibration: dict) -> dict:
    """The paper's check (appendix H): a vanilla model with its top-k confidence neurons mean-ablated
    (cumulatively; `vanilla_ablation` is neuron_ablation.AblationResult.to_dict()) against the LN-free
    model's unablated entropy and CE (`ln_free_calibration`: {"mean_entropy", "mean_ce"}).

    {"k", "entropy", "ce"} of the ablated vanilla model and the differences LN-free - ablated vanilla.
    Both must be measured on the same data.
    """
    cum = vanilla_ablation["cumulative"]
    if not cum:
        raise ValueError("the vanilla model's ablation holds no neuron")
    last = cum[-1]
    return {"k": len(last["neurons"]), "neurons": list(last["neurons"]), "entropy": last["entropy"], "ce": last["ce"],
            "baseline_entropy": vanilla_ablation["baseline"]["entropy"],
            "baseline_ce": vanilla_ablation["baseline"]["ce"],
            "ln_free_entropy": ln_free_calibration["mean_entropy"], "ln_free_ce": ln_free_calibration["mean_ce"],
            "entropy_gap": ln_free_calibration["mean_entropy"] - last["entropy"],
            "ce_gap": ln_free_calibration["mean_ce"] - last["ce"]}


# ------------------------------------------------------------------ benchmarks (lm-eval)
def model_tokenizer(spec: str):
    """The tokenizer of a model spec: GPT-2's for compact-vocabulary (demo) models, a folder's own, a
    run's or checkpoint's base model's, else the Hub id's (the bundled GPT-2 BPE offline)."""
    if spec.startswith("demo:") or _vocab_map(spec) is not None:
        return load_gpt2_tokenizer("gpt2")
    try:
        ckpt = resolve_checkpoint(spec)
    except (FileNotFoundError, ValueError):
        ckpt = None
    if ckpt is not None:
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
        cfg = run / "config.yaml" if run is not None else None
        if cfg is not None and cfg.is_file():
            base = (yaml.safe_load(cfg.read_text()) or {}).get("model")
            if isinstance(base, str) and base:
                return model_tokenizer(base)
        return load_gpt2_tokenizer(str(ckpt)) if (ckpt / "config.json").is_file() else load_gpt2_tokenizer("gpt2")
    path = Path(spec)
    return load_gpt2_tokenizer(str(path) if path.is_dir() else spec)


@dataclass(frozen=True)
class BenchTask:
    """One lm-eval task: a built-in name, with its data from a local file (`data_file`) or the Hub, or a
    task of one's own defined by `task_yaml`."""

    task: str
    data_file: str | None = None
    task_yaml: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None

    @property
    def dataset(self) -> str:
        return self.task

    def identity(self) -> dict:
        try:
            lm_eval_version = version("lm_eval")
        except PackageNotFoundError:
            lm_eval_version = None
        ident = {"task": self.task, "limit": self.limit, "num_fewshot": self.num_fewshot, "lm_eval": lm_eval_version}
        for key in ("data_file", "task_yaml"):
            value = getattr(self, key)
            if value is not None:
                ident[key] = path_identity(value) if os.path.exists(value) else value
        return ident

    def load(self) -> "BenchTask":
        return self


@dataclass
class BenchResult(EntryResult):
    entry: CacheEntry

    @property
    def score(self):
        return TaskScore(**self.entry.meta["score"])

    def to_json(self) -> dict:
        m = self.entry.meta
        return {"model": m["model"], "label": m["label"], "ln_free": m["ln_free"], **m["score"],
                "local_data": m.get("local_data")}


def benchmark_eval(model: str | LoadedModel, task: BenchTask, *,
                   cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, device: str = "auto",
                   precision: str = "fp32", batch_size: int = 8, progress: Progress | None = None,
                   refresh: bool = False, cache_only: bool = False) -> BenchResult | None:
    """lm-eval accuracy of `model` on one task (benchmarks.py), cached. `progress(done, 1)` per task.
    cache_only: return the cached result or None, never compute (e.g. a Hub task while offline)."""
    require_lm_eval()
    run, prec, entry = _start("benchmark", model, task, {}, cache_dir=cache_dir,  # type: ignore[arg-type]
                              device=device,
                              precision=precision, refresh=refresh, progress=None)
    if entry is not None:
        if progress is not None:
            progress(1, 1)
        return BenchResult(entry)
    if cache_only:
        return None
    lm = run.loaded()
    scores = evaluate_tasks(lm.model, model_tokenizer(lm.spec), [task.task],
                            local_data={task.task: task.data_file} if task.data_file else None,
                            task_yaml=[task.task_yaml] if task.task_yaml else None, vocab_map=_vocab_map(lm.spec),
                            limit=task.limit, num_fewshot=task.num_fewshot, batch_size=batch_size, precision=prec)
    sc = scores[task.task]
    if progress is not None:
        progress(1, 1)
    meta = {"n_sequences": sc.n, "score": sc.to_dict(), "precision": prec, "local_data": task.data_file}
    return BenchResult(run.store(meta, {}))
