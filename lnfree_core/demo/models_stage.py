"""Build stages for the demo models: a fresh GPT-2, its pretraining, the two fine-tunes, their exports.

Every training stage runs the project's trainer (:func:`lnfree_core.train.train`) with a
:class:`~lnfree_core.config.TrainConfig` on the OWT-like training split, on the CPU in fp32:

* ``pretrain``: vanilla mode from the freshly initialised model in ``work/init`` (so the trainer's
  whole path is exercised), saved as the Hugging Face folder ``models/original``;
* ``vanilla`` and ``ln-free``: from ``models/original``, same data order, steps and LR schedule,
  with the removal schedule ``fit_schedule(n_layer, finetune_steps)`` fitted to the model's layer
  count (the vanilla control ignores its removal events); each exported with ``export_model`` to
  ``models/<name>`` (the vanilla export with ``allow_live``: its LNs are live by design).

The trainer reports nothing while it runs, so a helper thread reads the run's ``status.json`` and
forwards its step to ``progress``. The trainer installs signal handlers, which Python allows only
in the main thread: run the build there (the CLI does).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lnfree_core.config import TrainConfig
from lnfree_core.data.vocab_map import load_vocab_map, save_vocab_map
from lnfree_core.export import export_model
from lnfree_core.method.schedule import HParams, fit_schedule
from lnfree_core.models import load_model
from lnfree_core.rundir import METRICS_FILE, read_jsonl, read_status
from lnfree_core import train as trainer  # called as trainer.train, so a test can replace it

from .original import install_shipped, use_or_warn
from .paths import demo_dataset_path, demo_model_path, demo_run_path, init_model_path
from .sizes import DemoSize

Progress = Callable[[str, int, int], None]
_POLL_S = 0.25
COMPACT_VOCAB_NOTE = (
    "\n\n## Demo-suite model: compact vocabulary\n\nThis model was built by `python -m lnfree_core demo build`. "
    "Its token ids index a compact vocabulary (the GPT-2 tokens of the demo corpora), not GPT-2's: "
    "`vocab_map.json` maps compact id -> GPT-2 id (`lnfree_core.data.vocab_map`); the tokenizer saved here "
    "already encodes and decodes in compact ids.\n"
)


class DemoBuildError(RuntimeError):
    """A demo build stage could not finish; the message says which and why."""


class DemoBuildCancelled(DemoBuildError):
    """Training was stopped by SIGINT/SIGTERM (the trainer checkpointed first); ``signum`` says which."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def _gpt2_config(size: DemoSize, vocab_size: int):
    eot = vocab_size - 1  # the compact vocabulary is sorted, so EOT (GPT-2 50256) is last
    return GPT2Config(vocab_size=vocab_size, n_positions=size.seq_len, n_embd=size.n_embd, n_layer=size.n_layer,
                      n_head=size.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=size.tie_embeddings)


def make_init(root: Path, size: DemoSize, progress: Progress) -> dict:
    """A freshly initialised GPT-2 (seeded) over the compact vocabulary, saved to ``work/init``."""
    vocab = load_vocab_map(demo_dataset_path("owt-demo", root))
    torch.manual_seed(size.seed)
    model = GPT2LMHeadModel(_gpt2_config(size, len(vocab)))
    out = init_model_path(root)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_vocab_map(out, vocab)
    progress("init", 1, 1)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(vocab),
            "eot_compact_id": len(vocab) - 1}


def _schedule(size: DemoSize, steps: int, lr: float, min_lr: float, warmup: int, weight_decay: float = 0.01) -> dict:
    hp = HParams(micro_batch_size=size.batch_size, grad_accum_steps=1, seq_len=size.seq_len, lr=lr, min_lr=min_lr,
                 warmup_steps=warmup, max_steps=steps, weight_decay=weight_decay, aux_weight=size.aux_weight)
    return fit_schedule(size.n_layer, steps, hp, name=f"demo-{size.name}").to_dict()


def _watch(run_dir: Path, stage: str, total: int, progress: Progress, stop: threading.Event) -> None:
    last = -1
    while not stop.wait(_POLL_S):
        try:
            step = int((read_status(run_dir) or {})["step"])
        except (ValueError, KeyError, TypeError):
            continue
        if step != last:
            last = step
            progress(stage, min(step, total), total)


def run_training(stage: str, model: str, run_dir: Path, dataset: Path, mode: str, schedule: dict,
                 seed: int, progress: Progress, device: str = "cpu") -> dict:
    """Train with the project's trainer into the new ``run_dir`` on ``device`` (the trainer's auto | cpu | cuda
    | cuda:N, float32); DemoBuildError unless it finishes."""
    if threading.current_thread() is not threading.main_thread():
        raise DemoBuildError("the demo build trains models, which must run in the main thread; "
                             "use `python -m lnfree_core demo build` from another thread or process")
    steps = int(schedule["hparams"]["max_steps"])
    cfg = TrainConfig(model=model, out=str(run_dir), dataset=str(dataset), schedule=schedule, mode=mode,
                      device=device, precision="fp32", seed=seed, shuffle=True, save_every=steps, keep_checkpoints=1)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(run_dir, stage, steps, progress, stop), daemon=True)
    progress(stage, 0, steps)
    watcher.start()
    try:
        result = trainer.train(cfg)
    finally:
        stop.set()
        watcher.join()
    if result.state == "cancelled":
        signum = signal.SIGTERM if "SIGTERM" in (result.reason or "") else signal.SIGINT
        raise DemoBuildCancelled(f"demo stage {stage!r} cancelled at step {result.step}: {result.reason}; "
                                 "building again redoes this stage and keeps the finished ones", signum)
    if result.state != "finished" or (mode == "ln-free" and result.reason):
        raise DemoBuildError(f"demo stage {stage!r}: training ended {result.state} at step {result.step}"
                             + (f": {result.reason}" if result.reason else ""))
    progress(stage, steps, steps)
    return _train_numbers(run_dir)


def _train_numbers(run_dir: Path) -> dict:
    """Final training loss (mean of the last 10 steps), steps, tokens/s and the device the trainer reported
    (its throughput event's ``device_name``) from metrics.jsonl."""
    rows = read_jsonl(run_dir / METRICS_FILE)
    steps = [r for r in rows if r.get("type") == "step"]
    events = [r for r in rows if r.get("type") == "event"]
    devices = [r["device_name"] for r in events if r.get("kind") == "throughput" and r.get("device_name")]
    last = steps[-10:]
    tps = sorted(r["tokens_per_s"] for r in steps)
    return {"steps": len(steps), "final_train_loss": sum(r["loss"] for r in last) / len(last),
            "median_tokens_per_s": tps[len(tps) // 2], "tokens": steps[-1]["tokens"],
            "removals": sum(1 for r in events if r.get("kind") == "removal"),
            "device": str(devices[-1]) if devices else "unknown"}


def make_original(root: Path, size: DemoSize, progress: Progress, device: str = "cpu") -> dict:
    """``models/original``: the shipped pretrained model when ``size.original == "shipped"`` and it serves this
    build's data (:mod:`.original`), else pretrained here from ``work/init`` (vanilla mode) on ``device``."""
    if size.original == "shipped" and use_or_warn(root, size):
        numbers = install_shipped(root)
        progress("pretrain", size.pretrain_steps, size.pretrain_steps)
        return numbers
    run_dir = demo_run_path("original", root)
    sched = _schedule(size, size.pretrain_steps, size.pretrain_lr, size.pretrain_min_lr, size.pretrain_warmup,
                      size.pretrain_weight_decay)
    numbers = run_training("pretrain", str(init_model_path(root)), run_dir, demo_dataset_path("owt-demo", root),
                           "vanilla", sched, size.seed, progress, device)
    vocab = load_vocab_map(init_model_path(root))
    save_vocab_map(run_dir, vocab)
    loaded = load_model(str(run_dir), device="cpu")
    out = demo_model_path("original", root, must_exist=False)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(str(out))
    save_vocab_map(out, vocab)
    return {**numbers, "source": "pretrained here"}


def make_finetune(root: Path, size: DemoSize, name: str, progress: Progress) -> dict:
    """Fine-tune ``models/original`` in mode ``name`` (``vanilla`` or ``ln-free``) and export it."""
    run_dir = demo_run_path(name, root)
    base = demo_model_path("original", root)
    sched = _schedule(size, size.finetune_steps, size.finetune_lr, size.finetune_min_lr, size.finetune_warmup)
    numbers = run_training(name, str(base), run_dir, demo_dataset_path("owt-demo", root), name, sched,
                           size.seed, progress)
    vocab = load_vocab_map(base)
    save_vocab_map(run_dir, vocab)
    out = demo_model_path(name, root, must_exist=False)
    res = export_model(str(run_dir), out, allow_live=name == "vanilla", overwrite=True,
                       repo_name=f"lnfree-demo-{name}")
    save_vocab_map(out, vocab)
    card = out / "README.md"
    card.write_text(card.read_text() + COMPACT_VOCAB_NOTE)
    numbers.update(ln_free=res.ln_free, export_logit_max_abs_diff=res.logit_max_abs_diff,
                   schedule={k: sched[k] for k in ("n_layers", "starts", "gaps")})
    return numbers
