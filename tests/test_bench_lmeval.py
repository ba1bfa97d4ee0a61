"""Benchmarks through lm-eval (appendix F), offline end to end: a small multiple-choice file made here,
a task YAML pointing at it (dataset_path: json), and a built-in task (PIQA) read from a local file;
accuracy and normalised accuracy checked against log-likelihoods computed here with plain forward
passes from lm-eval's definition: the continuation is " " + choice (target delimiter), its tokens are
those of tokens(context + continuation) after tokens(context), ll(choice) = sum_k log p(token k |
context, tokens < k); acc = mean [argmax ll == label]; acc_norm = mean [argmax ll / len(choice) == label]
(choice length in characters, without the delimiter)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is an optional extra (requirements-extras.txt)")

DOCS = [
    {"question": "The cat sat on the", "choices": ["mat", "moon", "telephone"], "label": 0},
    {"question": "Water is", "choices": ["wet", "dry"], "label": 0},
    {"question": "One, two,", "choices": ["three", "blue sky"], "label": 1},
    {"question": "She opened the", "choices": ["door", "window", "a"], "label": 2},
    {"question": "It was a sunny", "choices": ["day", "night"], "label": 0},
    {"question": "He drank a cup of", "choices": ["coffee", "stones and sand"], "label": 1},
]


@pytest.fixture(scope="module")
def big_vocab_model(tmp_path_factory):
    from _tiny import tiny_model

    path = tmp_path_factory.mktemp("bench") / "gpt2-tiny-fullvocab"
    tiny_model(seed=7, vocab_size=50257).save_pretrained(str(path))
    return path


def _task(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    yml = tmp_path / "mc_task.yaml"
    yml.write_text(f"""task: lnfree_test_mc
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    return yml


def _by_hand(model_dir, docs):
    """(acc, acc_norm) from log-likelihoods of plain forward passes (GPT-2 BPE, offline)."""
    from transformers import GPT2LMHeadModel

    from lnfree_core.data import load_gpt2_tokenizer

    tok = load_gpt2_tokenizer(offline=True)
    model = GPT2LMHeadModel.from_pretrained(str(model_dir)).eval()
    hits, hits_norm = [], []
    for ctx, choices, label in docs:
        lls = []
        for ch in choices:
            c = tok.encode(ctx)
            x = tok.encode(ctx + " " + ch)[len(c):]
            ids = torch.tensor([c + x])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            lls.append(sum(float(logp[len(c) - 1 + k, x[k]]) for k in range(len(x))))
        lls = np.array(lls)
        hits.append(int(np.argmax(lls)) == label)
        hits_norm.append(int(np.argmax(lls / np.array([len(ch) for ch in choices]))) == label)
    return float(np.mean(hits)), float(np.mean(hits_norm))


def test_own_multiple_choice_task_end_to_end(tmp_path, big_vocab_model):
    from lnfree_core.analysis.cached_experiments import BenchTask, benchmark_eval

    yml = _task(tmp_path)
    res = benchmark_eval(str(big_vocab_model), BenchTask("lnfree_test_mc", task_yaml=str(yml)),
                         cache_dir=tmp_path / "cache")
    acc, acc_norm = _by_hand(big_vocab_model, [(d["question"], d["choices"], d["label"]) for d in DOCS])
    sc = res.score
    assert sc.n == len(DOCS) and sc.metric == "acc_norm"
    assert sc.acc == pytest.approx(acc) and sc.acc_norm == pytest.approx(acc_norm)
    assert sc.acc_norm_stderr == pytest.approx(np.sqrt(acc_norm * (1 - acc_norm) / (len(DOCS) - 1)))
    again = benchmark_eval(str(big_vocab_model), BenchTask("lnfree_test_mc", task_yaml=str(yml)),
                           cache_dir=tmp_path / "cache")
    assert again.entry.path == res.entry.path


def test_builtin_task_from_a_local_file_and_the_cli(tmp_path, big_vocab_model, capsys):
    from lnfree_core.__main__ import main

    piqa = [{"goal": "To open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0},
            {"goal": "To dry wet hair", "sol1": "use a towel", "sol2": "pour water on it", "label": 0},
            {"goal": "To cool a drink", "sol1": "add ice", "sol2": "heat it up", "label": 1}]
    data = tmp_path / "piqa_valid.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in piqa))
    out_csv = tmp_path / "bench.csv"
    rc = main(["bench", "--model", str(big_vocab_model), "--task", "piqa", "--data", f"piqa={data}",
               "--cache-dir", str(tmp_path / "cache"), "--json", "--csv", str(out_csv)])
    assert rc == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    # lm-eval's PIQA prompt: "Question: {goal}\nAnswer:" and the choices with a leading space
    acc, acc_norm = _by_hand(big_vocab_model, [(f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]], d["label"])
                                               for d in piqa])
    assert row["task"] == "piqa" and row["metric"] == "acc_norm" and row["n"] == 3
    assert row["acc"] == pytest.approx(acc) and row["acc_norm"] == pytest.approx(acc_norm)
    assert out_csv.read_text().splitlines()[0].startswith("model,label,ln_free,task,metric,value")


def test_bench_cli_rejects_bad_arguments_before_any_work(tmp_path, capsys):
    from lnfree_core.__main__ import main

    assert main(["bench", "--model", "x", "--data", "piqa"]) == 2
    assert "TASK=FILE" in capsys.readouterr().err
    assert main(["bench", "--model", "x", "--data", f"piqa={tmp_path / 'none.jsonl'}"]) == 2
    assert main(["bench", "--model", "x", "--task", "boolq", "--data", f"piqa={__file__}"]) == 2
    assert "not evaluated" in capsys.readouterr().err
    assert main(["bench", "--model", "x", "--task", "piqa", "--data", f"piqa={__file__}",
                 "--csv", str(tmp_path / "missing" / "b.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_lm_eval_says_how_to_install(monkeypatch):
    from lnfree_core.analysis import benchmarks

    monkeypatch.setattr(benchmarks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="requirements-extras.txt"):
        benchmarks.require_lm_eval()


def test_compact_vocabulary_model_through_its_vocab_map(tmp_path):
    """A model over a compact vocabulary (as the demo suite's) scores the task with its ids mapped; a text
    outside the vocabulary is an error naming the tokens."""
    from _tiny import tiny_model
    from lnfree_core.analysis.cached_experiments import BenchTask, benchmark_eval
    from lnfree_core.data import load_gpt2_tokenizer
    from lnfree_core.data.vocab_map import save_vocab_map

    tok = load_gpt2_tokenizer(offline=True)
    ids = {50256}
    for d in DOCS:
        ids |= set(tok.encode(d["question"]))
        for c in d["choices"]:
            ids |= set(tok.encode(d["question"] + " " + c))
    vmap = np.array(sorted(ids))
    folder = tmp_path / "compact"
    tiny_model(seed=3, vocab_size=len(vmap)).save_pretrained(str(folder))
    save_vocab_map(folder, vmap)
    yml = _task(tmp_path)
    sc = benchmark_eval(str(folder), BenchTask("lnfree_test_mc", task_yaml=str(yml)), cache_dir=None).score
    # by hand: GPT-2 ids -> compact ids (position in vmap), then the same log-likelihoods
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    index = {int(g): i for i, g in enumerate(vmap)}
    hits, hits_norm = [], []
    for d in DOCS:
        lls = []
        for ch in d["choices"]:
            c = tok.encode(d["question"])
            x = tok.encode(d["question"] + " " + ch)[len(c):]
            seq = [index[i] for i in c + x]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
            lls.append(sum(float(logp[len(c) - 1 + k, seq[len(c) + k]]) for k in range(len(x))))
        lls = np.array(lls)
        hits.append(int(np.argmax(lls)) == d["label"])
        hits_norm.append(int(np.argmax(lls / np.array([len(ch) for ch in d["choices"]]))) == d["label"])
    assert sc.acc == pytest.approx(np.mean(hits)) and sc.acc_norm == pytest.approx(np.mean(hits_norm))
    data = tmp_path / "mc.jsonl"
    data.write_text(json.dumps({"question": "Zebras", "choices": ["quack", "moo"], "label": 0}) + "\n")
    with pytest.raises(ValueError, match="compact vocabulary"):
        benchmark_eval(str(folder), BenchTask("lnfree_test_mc", task_yaml=str(yml)), cache_dir=None)
