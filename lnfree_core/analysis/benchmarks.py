"""Benchmark accuracy through EleutherAI's lm-evaluation-harness (appendix F; appendix C for Pythia's
HellaSwag), on the model object lnfree has loaded (FakeLN form, run, checkpoint or export alike).

Tasks are lm-eval's own (no re-implementation): BoolQ, HellaSwag, PIQA and WinoGrande by default
(PAPER_TASKS), zero-shot, on their validation split. Each multiple-choice document is scored by the
summed log-likelihood of every choice's tokens given the context; the prediction is the argmax
(`acc`), or the argmax of the log-likelihood divided by the choice's length in characters
(`acc_norm`, lm-eval's length normalisation). The paper reports normalised accuracy where a task has
one (HellaSwag, PIQA); BoolQ and WinoGrande have `acc` only. Standard errors are lm-eval's (the
standard error of the mean over documents).

Task data. lm-eval loads a task's data from the Hugging Face Hub (`dataset_path` of its YAML). For
offline use a task's validation split can come from a local json/jsonl file in the task's own format
(`local_data={"piqa": "piqa_valid.jsonl"}`): lnfree writes a task YAML that includes lm-eval's and
replaces its data source by `dataset_path: json` with `dataset_kwargs: {data_files: ...}`. A task of
one's own is a YAML file (`task_yaml`), e.g. a multiple-choice file of one's own:

    task: my_mc
    dataset_path: json
    dataset_kwargs: {data_files: {validation: /abs/path/mc.jsonl}}
    output_type: multiple_choice
    validation_split: validation
    doc_to_text: "{{question}}"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{label}}"
    metric_list: [{metric: acc}, {metric: acc_norm}]

Models with a compact (demo) vocabulary are evaluated through their vocab_map: GPT-2 ids are mapped
to compact ids, and a text with a token outside the vocabulary is an error that names the token.

lm-eval is an optional extra (requirements-extras.txt); without it, `require_lm_eval` raises an
ImportError saying how to install it.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.vocab_map import from_gpt2_ids

PAPER_TASKS = ("boolq", "hellaswag", "piqa", "winogrande")
LM_EVAL_PIN = "lm-eval==0.4.13"
MISSING_MESSAGE = (f"the benchmarks need EleutherAI's lm-evaluation-harness, an optional extra of lnfree: "
                   f"pip install -r requirements-extras.txt (or pip install '{LM_EVAL_PIN}')")


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def require_lm_eval() -> None:
    if not lm_eval_available():
        raise ImportError(MISSING_MESSAGE)


@dataclass
class TaskScore:
    task: str
    metric: str  # "acc_norm" where the task has it, else "acc"
    value: float
    stderr: float | None
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    n: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# lm-eval 0.4.13's YAML files of the paper's tasks (found without indexing every task, which is slow)
_PAPER_YAML = {"boolq": "super_glue/boolq/default.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
               "piqa": "piqa/piqa.yaml", "winogrande": "winogrande/default.yaml"}


def builtin_task_yaml(task: str) -> Path:
    """The YAML file of one of lm-eval's tasks."""
    require_lm_eval()
    # local: lm-eval is an optional extra (require_lm_eval); lm_eval.tasks: ~1.2 s to import (measured)
    import lm_eval
    from lm_eval.tasks import TaskManager

    if task in _PAPER_YAML:
        path = Path(lm_eval.__file__).parent / "tasks" / _PAPER_YAML[task]
        if path.is_file():
            return path

    entry = TaskManager().task_index.get(task)
    path = getattr(entry, "yaml_path", None) if entry is not None and not isinstance(entry, dict) else \
        (entry or {}).get("yaml_path")
    if not path or path == -1:
        raise ValueError(f"lm-eval has no task {task!r} defined by a YAML file")
    return Path(path)


def local_task_yaml(task: str, data_file: str | Path, folder: str | Path, split: str | None = None) -> str:
    """Write `folder`/<task>_local.yaml: lm-eval's task `task` reading its evaluation split from the local
    json/jsonl `data_file`. Returns the new task's name."""
    data_file = Path(data_file).expanduser().resolve()
    if not data_file.is_file():
        raise FileNotFoundError(f"local data for {task}: {data_file} is not a file")
    base = builtin_task_yaml(task)
    # local: lm-eval is an optional extra (builtin_task_yaml required it); ~1.2 s to import (measured)
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(base, resolve_func=False)
    split = split or cfg.get("validation_split") or cfg.get("test_split") or "validation"
    name = f"{task}_local"
    out = {"include": str(base), "task": name, "dataset_path": "json", "dataset_name": None,
           "dataset_kwargs": {"data_files": {split: str(data_file)}}, "training_split": None,
           "validation_split": split if cfg.get("validation_split") else None,
           "test_split": split if not cfg.get("validation_split") else None, "tag": []}
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(out, sort_keys=False))
    return name


def _mapped_hflm(model, tokenizer, vocab_map: np.ndarray | None, batch_size: int, precision: str):
    """lm-eval's HFLM around an already-loaded model; with a vocab_map, token ids are mapped to compact ids."""
    # local: lm-eval is an optional extra; lm_eval.models.huggingface: ~1.0 s to import (measured)
    from lm_eval.models.huggingface import HFLM

    mixed = torch.bfloat16 if precision == "bf16" else None

    class LnfreeLM(HFLM):
        def tok_encode(self, string, *args, **kwargs):
            ids = super().tok_encode(string, *args, **kwargs)
            if vocab_map is None:
                return ids
            try:
                return from_gpt2_ids(ids, vocab_map).tolist()
            except ValueError as e:
                raise ValueError(f"{e}: the text {string[:60]!r} cannot be written in this model's compact "
                                 "vocabulary") from None

        @property
        def prefix_token_id(self):
            tid = super().prefix_token_id
            return tid if vocab_map is None else int(from_gpt2_ids([tid], vocab_map)[0])

        @property
        def eot_token_id(self):
            tid = super().eot_token_id
            return tid if vocab_map is None else int(from_gpt2_ids([tid], vocab_map)[0])

    return LnfreeLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, mixed_precision_dtype=mixed)


def _score(task: str, res: dict, n: int) -> TaskScore:
    def get(key):
        v = res.get(f"{key},none")
        return None if v is None or v == "N/A" else float(v)

    acc, acc_norm = get("acc"), get("acc_norm")
    if acc is None:
        raise ValueError(f"task {task!r} reported no accuracy (metrics: {sorted(res)}); lnfree runs "
                         "multiple-choice tasks")
    metric = "acc_norm" if acc_norm is not None else "acc"
    return TaskScore(task=task, metric=metric, value=acc_norm if acc_norm is not None else acc,
                     stderr=get(f"{metric}_stderr"), acc=acc, acc_stderr=get("acc_stderr"), acc_norm=acc_norm,
                     acc_norm_stderr=get("acc_norm_stderr"), n=n)


def _custom_names(task_yaml: list[str] | None) -> set[str]:
    out = set()
    for p in task_yaml or []:
        try:
            cfg = yaml.load(Path(p).expanduser().read_text(), Loader=yaml.BaseLoader) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read the task YAML {p}: {e}") from None
        if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
            out.add(cfg["task"])
    return out


def evaluate_tasks(model, tokenizer, tasks: list[str], *, local_data: dict[str, str] | None = None,
                   task_yaml: list[str] | None = None, vocab_map: np.ndarray | None = None,
                   limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 8,
                   precision: str = "fp32") -> dict[str, TaskScore]:
    """lm-eval's simple_evaluate of `tasks` on `model` (a loaded transformers model) -> {task: TaskScore}.

    local_data: {task: json/jsonl file} replaces a built-in task's Hub data (module docstring).
    task_yaml: YAML files of tasks of one's own; their `task` names go in `tasks`.
    limit: at most this many documents per task (None: all). num_fewshot: None = the task's default (0).
    """
    require_lm_eval()
    # local: lm-eval is an optional extra (require_lm_eval); ~1.2 s to import its tasks (measured)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    local_data = dict(local_data or {})
    with tempfile.TemporaryDirectory(prefix="lnfree-lmeval-") as tmp:
        include = [str(Path(p).expanduser().resolve().parent) for p in task_yaml or []]
        names = {}
        for t in tasks:
            names[t] = local_task_yaml(t, local_data[t], tmp) if t in local_data else t
        if local_data:
            include.append(tmp)
        builtin = any(n == t for t, n in names.items()) and not all(t in _custom_names(task_yaml) for t in tasks)
        tm = TaskManager(include_path=include or None, include_defaults=builtin)
        unknown = [n for n in names.values() if n not in tm.all_tasks]
        if unknown:
            raise ValueError(f"lm-eval knows no task {unknown}; give its YAML file (task_yaml) or a built-in name")
        lm = _mapped_hflm(model, tokenizer, vocab_map, batch_size, precision)
        try:
            out = simple_evaluate(model=lm, tasks=list(names.values()), num_fewshot=num_fewshot, limit=limit,
                                  task_manager=tm, log_samples=False, bootstrap_iters=1000, verbosity="ERROR")
        except (ConnectionError, OSError) as e:
            hub = [t for t in tasks if t not in local_data and t not in _custom_names(task_yaml)]
            hint = (f"; {', '.join(hub)} read their data from the Hugging Face Hub: give a local json/jsonl file "
                    "of the task's validation split instead (--data TASK=FILE, or local_data)") if hub else ""
            raise OSError(f"{e}{hint}") from None
    scores = {}
    for t, name in names.items():
        n = int(out.get("n-samples", {}).get(name, {}).get("effective", 0))
        scores[t] = _score(t, out["results"][name], n)
    return scores
