"""The demo suite built at tiny size, once for this module, through the CLI: artifacts, status, reuse,
models, vocabulary maps, the filtered set and the summary numbers."""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lnfree_core.data.tokenizer import EOT_ID, load_gpt2_tokenizer
from lnfree_core.data.vocab_map import decode_tokens, load_vocab_map, to_gpt2_ids
from lnfree_core.demo import DATASET_NAMES, MODEL_NAMES, demo_dataset_path, demo_model_path, demo_status, get_size
from lnfree_core.demo.stages import STAGES
from lnfree_core.demo.tokens import read_rows, unigram_entropy

TINY = get_size("tiny")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(home, root, CLI output): the tiny demo suite built by `demo build` in HOME/lnfree_home/demo."""
    from lnfree_core.__main__ import main

    home = tmp_path_factory.mktemp("demo-home")
    root = home / "lnfree_home" / "demo"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["demo", "build", "--out", str(root), "--size", "tiny", "--threads", "1"])
    assert rc == 0, out.getvalue()
    return home, root, out.getvalue()


@pytest.fixture
def in_home(built, monkeypatch):
    """Run the test in HOME, so that demo:NAME finds the build by the default root rule."""
    monkeypatch.chdir(built[0])
    return built[1]


def _summary(root: Path) -> dict:
    return json.loads((root / "summary.json").read_text())


def test_cli_prints_progress_and_the_summary(built):
    text = built[2]
    lines = [ln for ln in text.splitlines() if ln.startswith("[demo")]
    for stage in STAGES:
        assert any(f"] {stage}: " in ln for ln in lines), stage
    assert lines[-1].endswith("| overall 100%")
    assert "mean CE (nats)" in text and "unigram entropy of the OWT-like train split" in text
    assert "demo:ln-free" in text


def test_every_artifact_exists(built):
    root = built[1]
    for name in DATASET_NAMES:
        folder = demo_dataset_path(name, root, must_exist=True)
        assert (folder / "vocab_map.json").is_file()
    assert (demo_dataset_path("owt-demo", root) / "validation.parquet").is_file()
    assert (demo_dataset_path("pile-filtered-demo", root) / "tokens_removed.json").is_file()
    assert (demo_dataset_path("pile-filtered-demo", root) / "filter_report.json").is_file()
    for name in MODEL_NAMES:
        folder = demo_model_path(name, root)
        assert (folder / "model.safetensors").is_file() and (folder / "vocab_map.json").is_file()
        run = root / "runs" / name
        assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
        assert (run / "vocab_map.json").is_file()
    for name in ("vanilla", "ln-free"):
        assert (demo_model_path(name, root) / "lnfree_export.json").is_file()  # through export_model
    for stage in STAGES:
        assert (root / "stages" / f"{stage}.json").is_file()
    assert (root / "summary.json").is_file() and (root / "vocab_map.json").is_file()


def test_status_says_built(built):
    from lnfree_core.__main__ import main

    root = built[1]
    st = demo_status(root)
    assert st["built"] is True and st["size"] == "tiny"
    assert all(s["finished"] for s in st["stages"].values())
    assert all(m["built"] for m in st["models"].values())
    assert st["models"]["ln-free"]["ln_free"] is True and st["models"]["original"]["ln_free"] is False
    assert all(d["built"] for d in st["datasets"].values())
    assert st["summary"]["ce"]["ln-free"].keys() == set(DATASET_NAMES)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "status", "--out", str(root), "--json"]) == 0
    assert json.loads(out.getvalue())["built"] is True
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "status", "--out", str(root)]) == 0
    assert "built (tiny)" in out.getvalue() and "demo:ln-free" in out.getvalue()


def test_rebuild_reuses_everything_and_is_fast(built):
    from lnfree_core.demo import build_demo

    root = built[1]
    weights = {n: (demo_model_path(n, root) / "model.safetensors").stat().st_mtime_ns for n in MODEL_NAMES}
    before = _summary(root)
    calls = []
    t0 = time.perf_counter()
    summary = build_demo(root, "tiny", progress=lambda *a: calls.append(a), threads=1)
    assert time.perf_counter() - t0 < 10
    assert calls == [(stage, 1, 1) for stage in STAGES]  # nothing but "already done"
    assert {n: (demo_model_path(n, root) / "model.safetensors").stat().st_mtime_ns for n in MODEL_NAMES} == weights
    assert summary["ce"] == before["ce"] and summary["stage_keys"] == before["stage_keys"]


def test_demo_models_load_by_name_ln_free_and_with_live_layernorm(in_home):
    from lnfree_core.models import load_model
    from lnfree_core.method.surgery import fakeln_modules

    ln_free = load_model("demo:ln-free")
    assert ln_free.source == "demo" and ln_free.ln_free
    assert fakeln_modules(ln_free.model) and all(m.is_removed for m in fakeln_modules(ln_free.model).values())
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in ln_free.model.modules())
    original = load_model("demo:original")
    assert not original.ln_free
    lns = [m for m in original.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(lns) == 2 * TINY.n_layer + 1
    x = torch.randn(4, TINY.n_embd) * 5 + 3
    y = lns[0](x)  # a live LayerNorm normalises: unit scale per row before its affine map
    z = (y - lns[0].bias) / lns[0].weight
    assert torch.allclose(z.std(-1, unbiased=False), torch.ones(4), atol=1e-3)
    assert not load_model("demo:vanilla").ln_free


def test_models_use_the_compact_vocabulary_with_eot_last(in_home):
    vmap = load_vocab_map(in_home / "vocab_map.json")
    for name in MODEL_NAMES:
        cfg = json.loads((demo_model_path(name) / "config.json").read_text())
        assert cfg["vocab_size"] == len(vmap)
        assert cfg["eos_token_id"] == cfg["bos_token_id"] == len(vmap) - 1
        assert cfg.get("tie_word_embeddings", True) == TINY.tie_embeddings
        assert vmap[cfg["eos_token_id"]] == EOT_ID
        np.testing.assert_array_equal(load_vocab_map(f"demo:{name}"), vmap)
    for spec in (in_home / "runs" / "ln-free", in_home / "runs" / "original",
                 demo_dataset_path("pile-demo") / "train.parquet"):
        np.testing.assert_array_equal(load_vocab_map(spec), vmap)


def test_vocab_map_round_trips_to_the_gpt2_ids_of_the_original_text(in_home):
    from lnfree_core.demo.corpora import prose_documents

    tok = load_gpt2_tokenizer(offline=True)
    val_dir = demo_dataset_path("owt-demo")
    rows = read_rows(val_dir / "validation.parquet")
    vmap = load_vocab_map(val_dir)
    if TINY.row_start_eot:  # each row is EOT then the next seq_len - 1 tokens of the text stream
        assert (to_gpt2_ids(rows[:, 0], vmap) == EOT_ID).all()
        rows = rows[:, 1:]
    gpt2 = to_gpt2_ids(rows, vmap).ravel()
    want, texts = [], []  # the validation documents (every val_every-th), tokenized afresh, until enough
    for i, doc in enumerate(prose_documents()):
        if len(want) >= len(gpt2):
            break
        if i % TINY.val_every == 0:
            want += tok.backend_tokenizer.encode(doc.text, add_special_tokens=False).ids + [EOT_ID]
            texts.append(doc.text)
    np.testing.assert_array_equal(gpt2, want[:len(gpt2)])
    full = "".join(t + "<|endoftext|>" for t in texts)
    assert full.startswith(tok.decode(gpt2[:-1].tolist()).rstrip("\ufffd"))
    pieces = decode_tokens(rows.ravel()[:30], tok, vmap)
    assert len(pieces) == 30 and full.startswith("".join(pieces))  # the heading is ASCII: exact pieces


def test_filtered_set_has_none_of_the_removed_tokens(in_home):
    vmap = load_vocab_map(in_home)
    removed = json.loads((demo_dataset_path("pile-filtered-demo") / "tokens_removed.json").read_text())
    removed_ids = np.array([t["token_id"] for t in removed])
    assert len(removed_ids) > 0
    train = set(to_gpt2_ids(read_rows(demo_dataset_path("owt-demo") / "train.parquet"), vmap).ravel().tolist())
    pile = to_gpt2_ids(read_rows(demo_dataset_path("pile-demo") / "train.parquet"), vmap)
    assert not set(removed_ids.tolist()) & train  # absent from the reference
    assert set(removed_ids.tolist()) <= set(pile.ravel().tolist())  # present in the target
    kept = to_gpt2_ids(read_rows(demo_dataset_path("pile-filtered-demo") / "train.parquet"), vmap)
    assert len(kept) > 0 and not np.isin(kept, removed_ids).any()
    clean = pile[~np.isin(pile, removed_ids).any(axis=1)]
    np.testing.assert_array_equal(kept, clean[:len(kept)])  # the first clean target sequences, in order
    info = _summary(in_home)["datasets"]["pile-filtered-demo"]
    assert info["removed_tokens"] == len(removed_ids) and info["clean_sequences"] == len(clean)


def test_summary_numbers_are_finite_and_recomputable(in_home):
    from transformers import GPT2LMHeadModel

    s = _summary(in_home)
    ce = s["ce"]
    assert set(ce) == set(MODEL_NAMES)
    assert all(math.isfinite(v) and v > 0 for row in ce.values() for v in row.values())
    q = s["quality"]
    assert q["ln_free_minus_vanilla"] == pytest.approx(ce["ln-free"]["owt-demo"] - ce["vanilla"]["owt-demo"])
    assert q["original_below_unigram"] == pytest.approx(q["unigram_entropy"] - ce["original"]["owt-demo"])
    train = read_rows(demo_dataset_path("owt-demo") / "train.parquet")
    assert q["unigram_entropy"] == pytest.approx(unigram_entropy(train, s["vocab"]["size"]))
    # CE of the exported LN-free model by plain transformers (its own loss), on the filtered set
    model = GPT2LMHeadModel.from_pretrained(str(demo_model_path("ln-free"))).eval()
    rows = torch.as_tensor(read_rows(demo_dataset_path("pile-filtered-demo") / "train.parquet")[:TINY.eval_rows]).long()
    with torch.no_grad():
        losses = [model(input_ids=r[None], labels=r[None]).loss.item() for r in rows]
    assert s["eval_sequences"]["pile-filtered-demo"] == len(rows)
    assert ce["ln-free"]["pile-filtered-demo"] == pytest.approx(float(np.mean(losses)), abs=1e-4)
    assert all(v is not None and v >= 0 for v in s["stage_seconds"].values())


def test_half_built_stage_is_redone_and_the_rest_reused(built):
    from lnfree_core.demo import build_demo

    root = built[1]
    marker = root / "stages" / "ln-free.json"
    marker.unlink()  # as if the build had stopped during the LN-removal fine-tune
    junk = demo_model_path("ln-free", root) / "partial.tmp"
    junk.write_text("half-written")
    original_mtime = (demo_model_path("original", root) / "model.safetensors").stat().st_mtime_ns
    before = _summary(root)
    calls = []
    build_demo(root, "tiny", progress=lambda *a: calls.append(a), threads=1)
    redone = {c[0] for c in calls if c[1:] != (1, 1)}
    assert redone == {"ln-free", "evaluate"}  # a redone stage redoes the stages after it
    assert marker.is_file() and not junk.exists()
    assert (demo_model_path("original", root) / "model.safetensors").stat().st_mtime_ns == original_mtime
    after = _summary(root)
    assert after["stage_keys"] == before["stage_keys"]
    assert demo_status(root)["built"]


def test_findings_match_an_independent_computation(built):
    """`demo findings` (lnfree's analyses) agrees with tests/_findings_ref.py (plain transformers, the definitions)."""
    from _findings_ref import reference_findings

    from lnfree_core.__main__ import main
    from lnfree_core.demo.findings import format_findings
    from lnfree_core.models import load_model

    root = built[1]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["demo", "findings", "--out", str(root), "--sequences", "8", "--json"])
    assert rc == 0, out.getvalue()
    found = json.loads(out.getvalue())
    assert (found["n_sequences"], found["seq_len"], found["threshold"]) == (8, TINY.seq_len, 0.3)
    x = torch.as_tensor(read_rows(demo_dataset_path("pile-filtered-demo", root) / "train.parquet")[:8],
                        dtype=torch.long)
    for name in MODEL_NAMES:
        got, ref = found["models"][name], reference_findings(load_model(str(root / "models" / name)).model, x)
        assert got["sink_rate_queries"] == pytest.approx(ref["sink_rate"], abs=1e-9), name
        # uniform attention: A[q, 0] = 1/(q+1) > 0.3 for q = 0, 1, 2 only
        assert got["sink_rate_uniform"] == pytest.approx(3 / TINY.seq_len, abs=1e-12), name
        assert 0.0 <= got["sink_rate_heads"] <= 1.0
        assert got["norm_ratios"] == pytest.approx(ref["norm_ratios"], rel=1e-4), name
        assert got["neurons"] == ref["neurons"], name
        assert got["rel_entropy"] == pytest.approx(ref["rel_entropy"], rel=1e-3, abs=1e-6), name
        assert got["rel_ce"] == pytest.approx(ref["rel_ce"], rel=1e-3, abs=1e-6), name
    table = format_findings(found)
    assert all(name in table.splitlines()[1] for name in MODEL_NAMES) and "sink rate" in table
    assert f"| {100 * 3 / TINY.seq_len:.1f}% |" in table  # the floor row


def test_findings_cli_rejects_bad_input(built, tmp_path, capsys):
    from lnfree_core.__main__ import main

    assert main(["demo", "findings", "--out", str(built[1]), "--sequences", "0"]) == 2
    assert "--sequences must be at least 1" in capsys.readouterr().err
    assert main(["demo", "findings", "--out", str(tmp_path / "nothing")]) == 2
    assert "demo build" in capsys.readouterr().err


# ------------------------------------------------------------------ IOI text: the IOI experiment on the demo
def test_ioi_sentences_are_deterministic_complete_and_cover_every_pool_word():
    from lnfree_core.analysis.ioi import DEFAULT_TEMPLATES, NAMES, OBJECTS, PLACES
    from lnfree_core.demo.ioi_text import interleave, ioi_sentences

    s = ioi_sentences(TINY.ioi_sentences, seed=TINY.seed)
    assert s == ioi_sentences(TINY.ioi_sentences, seed=TINY.seed) and s != ioi_sentences(TINY.ioi_sentences, seed=1)
    text = "\n".join(s)
    assert all(f" {w} " in text or f" {w}," in text or f" {w}." in text for w in NAMES + PLACES + OBJECTS)
    for line in s:  # a prompt of the set followed by its answer, the name not repeated (written by hand here)
        words = line.rstrip(".").replace(",", "").split()
        first, second, s2, io = words[1], words[3], words[-6], words[-1]
        assert first != second and s2 in (first, second) and io == ({first, second} - {s2}).pop()
        assert any(line.startswith(t.split(" [B]")[0]) and t.split("[PLACE]")[0].split("[A] ")[1] in line
                   for t in DEFAULT_TEMPLATES)
    assert interleave([1, 2, 3, 4], ["a"]) == [1, 2, "a", 3, 4]
    assert interleave([1, 2, 3], ["a", "b"]) == [1, "a", 2, "b", 3]
    assert interleave([], ["a"]) == ["a"]


def test_ioi_setting_changes_the_stage_keys():
    """A suite built before the IOI text (no ioi_sentences in its keys) is rebuilt from the datasets stage."""
    import dataclasses

    from lnfree_core.demo.build import plan_stages

    old = dataclasses.replace(TINY, ioi_sentences=0)
    new_keys = [s.key for s in plan_stages(Path("/x"), TINY)]
    old_keys = [s.key for s in plan_stages(Path("/x"), old)]
    assert all(a != b for a, b in zip(new_keys, old_keys))
    assert [s.key for s in plan_stages(Path("/x"), dataclasses.replace(TINY, seed=1))][0] != new_keys[0]


def test_every_ioi_prompt_token_is_in_the_demo_vocabulary(built):
    from lnfree_core.analysis.ioi import build_ioi_prompts
    from lnfree_core.demo.ioi_text import ioi_documents

    root = built[1]
    vocab = load_vocab_map(root)
    full = build_ioi_prompts(480, seed=0)  # the GPT-2 vocabulary: every template, every single-token name
    demo = build_ioi_prompts(480, seed=0, vocab_map=vocab)  # raised ValueError before the IOI text
    assert np.array_equal(to_gpt2_ids(demo.clean, vocab), full.clean)
    assert np.array_equal(to_gpt2_ids(demo.corrupt, vocab), full.corrupt) and demo.texts == full.texts
    owt = demo_dataset_path("owt-demo", root)
    meta = json.loads((owt / "dataset.json").read_text())
    docs = ioi_documents(TINY.ioi_sentences, seed=TINY.seed)
    assert meta["ioi"]["sentences"] == TINY.ioi_sentences and meta["ioi"]["documents"] == len(docs)
    import hashlib

    h = hashlib.sha256(b"".join(d.text.encode() + b"\x00" for d in docs)).hexdigest()
    assert meta["ioi"]["sha256"] == h
    # in the train split only, a small share of it
    tok = load_gpt2_tokenizer()
    gave = tok.encode(" gave")[0]
    train = to_gpt2_ids(read_rows(owt / "train.parquet"), vocab)
    val = to_gpt2_ids(read_rows(owt / "validation.parquet"), vocab)
    assert (train == gave).sum() >= TINY.ioi_sentences * 0.9 and (val == gave).sum() < TINY.ioi_sentences * 0.1
    assert 0 < meta["ioi"]["share_of_train_stream"] < 0.05
    assert meta["ioi"]["tokens"] / train.size == pytest.approx(meta["ioi"]["share_of_train_stream"], rel=0.1)
    assert sum(s.startswith("ioi#") for s in json.loads((owt / "documents.json").read_text())) == len(docs)


def test_cli_analyze_ioi_on_the_demo_models(in_home, tmp_path):
    from lnfree_core.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["analyze", "ioi", "--model", "demo:original", "--model", "demo:ln-free", "--n", "24",
                   "--json", "--quiet", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, out.getvalue()
    objs = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    models = [o for o in objs if "activation" in o]
    assert [o["ln_free"] for o in models] == [False, True]
    for o in models:
        act, attr, err = (np.asarray(o[k]) for k in ("activation", "attribution", "error"))
        assert act.shape == attr.shape == err.shape == (TINY.n_layer, 15) and o["n_prompts"] == 24
        assert np.allclose(err, attr - act, atol=1e-9) and np.isfinite(act).all()
        assert act[0, 10] == pytest.approx(1.0, abs=1e-6)  # resid_pre of layer 0 at S2 carries the whole change
    imp = next(o for o in objs if "improvement" in o)["improvement"]
    assert imp["vanilla"] == "demo:original" and imp["ln_free"] == "demo:ln-free" and math.isfinite(imp["mean"])


def test_ioi_page_on_the_demo_models(in_home):
    import test_app_support as S
    from test_app_compare_pages import chart_by_title

    at = S.new_app(in_home.parent / "runs", timeout=180)
    for k, v in {"analysis.cache_dir": str(in_home.parent / "cache"), "analysis.models": ["demo:original",
                                                                                        "demo:ln-free"],
                 "ioi.n": 8}.items():
        at.session_state[k] = v
    S.open_page(at, "pages/ioi_patching.py")
    assert not at.error, [e.value for e in at.error]
    for title in ("activation patching", "attribution patching", "error (attribution - activation)"):
        chart_by_title(at, title)
    assert "improvement score, mean over layers" in {m.label for m in at.metric}
