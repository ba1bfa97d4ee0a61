"""load_model from several threads at once (what the app's analysis pages do), in a fresh process.

transformers resolves its names lazily and builds models with process-wide state (meta device,
patched init functions, default dtype); loads started together used to fail with "cannot import name
'AutoModelForCausalLM'" or "Cannot copy out of meta tensor", or came back with a re-initialised
lm_head, and a failure could poison later loads. Each check runs in a new interpreter, because the
import race only exists before transformers is first imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _tiny import tiny_model
from lnfree_core.checkpoint import write_checkpoint
from lnfree_core.method.surgery import fakeln_modules, fakeln_state, make_removable

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys, threading
import torch
from lnfree_core.models import load_model

good, bad, rounds = json.loads(sys.argv[1])
x = (torch.arange(24) * 7 % 128).reshape(2, 12)

def logits(spec):
    if spec == "TOKENIZER":  # the offline GPT-2 tokenizer, built while models load (lazy imports too)
        from lnfree_core.data.tokenizer import load_gpt2_tokenizer
        return load_gpt2_tokenizer("gpt2", offline=True)("a b").input_ids
    with torch.no_grad():
        return load_model(spec).model(x).logits.tolist()

def concurrent(specs):
    out, errors = {}, {}
    barrier = threading.Barrier(len(specs))
    def go(spec):
        barrier.wait()
        try:
            out[spec] = logits(spec)
        except Exception as e:
            errors[spec] = f"{type(e).__name__}: {e}"
    threads = [threading.Thread(target=go, args=(s,)) for s in specs]
    for t in threads: t.start()
    for t in threads: t.join()
    return out, errors

report = {"rounds": []}
for _ in range(rounds):
    out, errors = concurrent(good + bad + ["TOKENIZER"])
    report["rounds"].append({"logits": out, "errors": errors})
report["sequential"] = {s: logits(s) for s in good}
print("REPORT" + json.dumps(report))
"""


def _run(good: list[str], bad: list[str], rounds: int = 3) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([good, bad, rounds])], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[0][len("REPORT"):]), proc.stderr


@pytest.fixture
def specs(tmp_path):
    """Three tiny GPT-2 folders (different seeds, one with 3 layers) and a run with an LN-free checkpoint."""
    good = []
    for i, kw in enumerate(({}, {"n_layer": 3}, {})):
        path = tmp_path / f"m{i}"
        tiny_model(seed=i, **kw).save_pretrained(str(path))
        good.append(str(path))
    lnfree = tiny_model(seed=5)
    make_removable(lnfree)
    for mod in fakeln_modules(lnfree).values():
        mod.remove(0.7)
    write_checkpoint(tmp_path / "run", 4, lnfree, None, fakeln_state(lnfree), {"step": 4})
    good.append(str(tmp_path / "run"))
    return good


def _assert_every_load_matches(report: dict, good: list[str], expected_errors: dict[str, str]) -> None:
    for i, rnd in enumerate(report["rounds"]):
        assert set(rnd["errors"]) == set(expected_errors), f"round {i}: {rnd['errors']}"
        for spec, what in expected_errors.items():
            assert what in rnd["errors"][spec], rnd["errors"][spec]
        for spec in good:
            got, want = torch.tensor(rnd["logits"][spec]), torch.tensor(report["sequential"][spec])
            assert torch.equal(got, want), f"round {i}: {spec} loaded concurrently differs from a lone load " \
                                           f"by {float((got - want).abs().max())}"


def test_concurrent_loads_equal_sequential_loads(specs):
    report, stderr = _run(specs, [])
    _assert_every_load_matches(report, specs, {})
    # Tied lm_head/wte weights are not "missing": transformers' load report must not be printed.
    assert "LOAD REPORT" not in stderr and "MISSING" not in stderr, stderr[-2000:]


def test_failed_loads_among_concurrent_ones_do_not_poison_the_process(specs, tmp_path):
    broken = tmp_path / "broken"
    tiny_model(seed=9).save_pretrained(str(broken))
    weights = broken / "model.safetensors"
    sd = load_file(str(weights))
    del sd["transformer.h.0.mlp.c_fc.weight"]  # would be silently re-initialised by transformers
    save_file(sd, str(weights), metadata={"format": "pt"})
    absent = str(tmp_path / "no-such-model")
    report, _ = _run(specs, [str(broken), absent])
    _assert_every_load_matches(report, specs, {str(broken): "ModelLoadError", absent: "FileNotFoundError"})


def test_missing_weight_is_an_error_naming_it(tmp_path):
    from lnfree_core.models import ModelLoadError, load_model

    path = tmp_path / "m"
    tiny_model().save_pretrained(str(path))
    sd = load_file(str(path / "model.safetensors"))
    del sd["transformer.ln_f.weight"]
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="transformer.ln_f.weight"):
        load_model(str(path))


def test_untied_model_missing_lm_head_is_an_error(tmp_path):
    """lm_head.weight may be absent only when it is tied to the embedding (config.tie_word_embeddings)."""
    from lnfree_core.models import ModelLoadError, load_model

    m = tiny_model()
    m.config.tie_word_embeddings = False
    path = tmp_path / "m"
    m.save_pretrained(str(path))
    sd = load_file(str(path / "model.safetensors"))
    sd.pop("lm_head.weight", None)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lm_head.weight"):
        load_model(str(path))
