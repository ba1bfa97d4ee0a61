"""The analysis pages (Compare, Outliers, First tokens, Confidence neurons, DLA) under AppTest, on a tiny
model set made on the spot: an "original" tiny GPT-2 folder, a vanilla run and an LN-free run (FakeLN
surgery, every block removed), and a jsonl of token ids. The pages must show exactly the numbers
lnfree_core.analysis computes."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ANALYSIS_PAGES = ["pages/compare.py", "pages/outliers.py", "pages/first_tokens.py", "pages/confidence.py",
                  "pages/dla.py"]
SEQ_LEN, N_SEQ = 32, 6


import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)


# ---------------------------------------------------------------------------------------- the tiny suite
def _tokens_file(path: Path, rows: int = 64, length: int = 64) -> Path:
    """rows x length token ids (vocab 128) with structure to learn, plus one rare id (120) in row 1
    (sequence 2 at 32 tokens per sequence, position 7)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for r in range(rows):
            start = int(rng.integers(0, 100))
            row = [(start + 3 * i + int(rng.integers(0, 2))) % 110 for i in range(length)]
            if r == 1:
                row[7] = 120
            fh.write(json.dumps({"input_ids": row}) + "\n")
    return path


def _finished(run_dir: Path, base: Path, data: Path, mode: str, steps: int) -> None:
    cfg = {"model": str(base), "dataset": str(data), "mode": mode, "out": str(run_dir), "schedule": "auto"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "request.yaml").write_text(yaml.safe_dump(cfg))
    now = time.time()
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "step": steps, "max_steps": steps,
                                                     "pid": 2**22 + 4321, "reason": None, "updated": now,
                                                     "started": now - 60}))
    if not (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").write_text("")


def build_suite(base: Path, *, train: bool = False, steps: int = 16) -> dict[str, Path]:
    """models/original (a tiny GPT-2 folder), data/tokens.jsonl, runs/tiny-vanilla and runs/tiny-lnfree.

    train=True fine-tunes both runs with the real trainer (a whole auto schedule, a few seconds each);
    otherwise the runs get one checkpoint made directly: the vanilla one a perturbed copy of the
    original, the LN-free one the original with FakeLN surgery and every block removed at sigma_bar
    = the mean per-token std its LayerNorm saw on the data.
    """
    import torch

    from _tiny import tiny_model
    from lnfree_core.checkpoint import write_checkpoint
    from lnfree_core.method.surgery import fakeln_modules, fakeln_state, make_removable

    original = base / "models" / "original"
    data = _tokens_file(base / "data" / "tokens.jsonl")
    tiny_model(seed=0).save_pretrained(str(original))
    runs = base / "runs"
    if train:
        from lnfree_core.config import TrainConfig
        from lnfree_core.train import train as run_train

        small = dict(max_steps=steps, micro_batch_size=4, grad_accum_steps=2, seq_len=SEQ_LEN, warmup_steps=2,
                     lr=3e-3, min_lr=1e-3)
        for name, mode in (("tiny-lnfree", "ln-free"), ("tiny-vanilla", "vanilla")):
            res = run_train(TrainConfig(model=str(original), dataset=str(data), schedule="auto", mode=mode,
                                        out=str(runs / name), overrides=small, save_every=steps))
            assert res.state == "finished", res
    else:
        with open(data) as fh:
            ids = torch.as_tensor([json.loads(line)["input_ids"][:SEQ_LEN] for line in fh][:16])
        vanilla = tiny_model(seed=0)
        with torch.no_grad():
            for p in vanilla.parameters():
                p.add_(0.01 * torch.randn_like(p))
        write_checkpoint(runs / "tiny-vanilla", steps, vanilla, None, {}, {"step": steps})
        lnfree = tiny_model(seed=0)
        stds: dict[str, float] = {}

        def record(name):
            def hook(module, args):
                stds.setdefault(name, float(args[0].std(dim=-1, correction=0).mean()))
            return hook

        hooks = [m.register_forward_pre_hook(record(name)) for name, m in lnfree.named_modules()
                 if isinstance(m, torch.nn.LayerNorm)]
        with torch.no_grad():
            lnfree(ids)
        for h in hooks:
            h.remove()
        order = list(stds)
        make_removable(lnfree)
        for (name, mod), key in zip(fakeln_modules(lnfree).items(), _ln_keys(order, fakeln_modules(lnfree))):
            mod.remove(stds[key])
        write_checkpoint(runs / "tiny-lnfree", steps, lnfree, None, fakeln_state(lnfree), {"step": steps})
    _finished(runs / "tiny-lnfree", original, data, "ln-free", steps)
    _finished(runs / "tiny-vanilla", original, data, "vanilla", steps)
    return {"original": original, "data": data, "runs": runs, "lnfree": runs / "tiny-lnfree",
            "vanilla": runs / "tiny-vanilla"}


def _ln_keys(ln_names: list[str], blocks: dict) -> list[str]:
    """The LayerNorm module name each FakeLN block ('mlp.0', 'qk.0', 'v.0', 'f') replaced."""
    out = []
    for block in blocks:
        kind, _, layer = block.partition(".")
        if kind == "f":
            out.append("transformer.ln_f")
        else:
            out.append(f"transformer.h.{layer}." + ("ln_2" if kind == "mlp" else "ln_1"))
    assert set(out) <= set(ln_names), (out, ln_names)
    return out


# ---------------------------------------------------------------------------------------- fixtures
def cached_suite(base: Path) -> dict[str, Path]:
    """build_suite(base) with an analysis cache folder of its own ("cache")."""
    out = build_suite(base)
    out["cache"] = base / "cache"
    return out


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return cached_suite(tmp_path_factory.mktemp("compare-suite"))


def specs(suite) -> list[str]:
    return [str(suite["original"]), str(suite["vanilla"]), str(suite["lnfree"])]


def new_app(suite, **state):
    """An AppTest of app.py on the tiny suite: the three models, the token file, 6 x 32 tokens."""
    at = S.new_app(suite["runs"], timeout=120)
    defaults = {"analysis.cache_dir": str(suite["cache"]), "analysis.models": specs(suite),
                "analysis.datasets": [str(suite["data"])], "analysis.dataset": str(suite["data"]),
                "analysis.n": N_SEQ, "analysis.seq_len": SEQ_LEN}
    for k, v in {**defaults, **state}.items():
        at.session_state[k] = v
    return at


def data_spec(suite):
    from lnfree_core.analysis.cached import DataSpec

    return DataSpec(str(suite["data"]), n=N_SEQ, seq_len=SEQ_LEN)


def by_columns(at, *cols) -> "pd.DataFrame":
    """The first st.dataframe on the page that has all of `cols`."""
    for df in at.dataframe:
        v = df.value
        if all(c in v.columns for c in cols):
            return v
    raise AssertionError(f"no dataframe with columns {cols}; got {[list(d.value.columns) for d in at.dataframe]}")


def chart_by_title(at, text: str):
    found = [c for c in S.charts(at) if text in S.chart_title(c)]
    assert found, [S.chart_title(c) for c in S.charts(at)]
    return found[0]


# ---------------------------------------------------------------------------------------- every page
@pytest.mark.parametrize("page", ANALYSIS_PAGES)
def test_analysis_page_renders_with_charts_and_no_error(suite, page):
    at = S.open_page(new_app(suite), page)
    assert at.title and not at.exception
    assert not at.error or page == "pages/outliers.py", [e.value for e in at.error]
    assert S.charts(at), f"{page} drew no chart"
    assert not [p for p in at.get("progress")], "the progress bar is left on the page after computing"
    assert any(Path(suite["cache"]).rglob("result.json")), "nothing was cached on disk"


@pytest.mark.parametrize("page", ANALYSIS_PAGES)
def test_analysis_page_without_models_says_so(suite, page):
    at = S.open_page(new_app(suite, **{"analysis.models": []}), page)
    assert any("Choose at least one model" in i.value for i in at.info)
    assert not S.charts(at)


# ---------------------------------------------------------------------------------------- Compare
def test_compare_table_holds_exactly_the_library_numbers(suite):
    from lnfree_core.analysis.cached import ce_eval
    from lnfree_core.analysis.tables import TableEntry, ce_table

    at = S.open_page(new_app(suite), "pages/compare.py")
    shown = by_columns(at, "model", "mean", "median", "p2.5-97.5_lo").set_index("model")
    direct = {s: ce_eval(s, data_spec(suite), cache_dir=None) for s in specs(suite)}  # computed afresh
    labels = {str(suite["original"]): "original", str(suite["vanilla"]): "tiny-vanilla",
              str(suite["lnfree"]): "tiny-lnfree"}
    assert list(shown.index) == list(labels.values())
    for spec, res in direct.items():
        row, sm = shown.loc[labels[spec]], res.summary
        assert row["mean"] == sm.mean and row["median"] == sm.median
        assert (row["p2.5-97.5_lo"], row["p2.5-97.5_hi"]) == sm.ranges["p2.5-97.5"]
        assert (row["p0.1-99.9_lo"], row["p0.1-99.9_hi"]) == sm.ranges["p0.1-99.9"]
        assert row["tokens"] == N_SEQ * (SEQ_LEN - 1)
        assert bool(row["ln_free"]) == (spec == str(suite["lnfree"]))
    table = ce_table([TableEntry(labels[s], "tokens.jsonl", r.summary.mean, ln_free=r.ln_free, group="2 layers")
                      for s, r in direct.items()])
    md = [m.value for m in at.markdown if m.value.startswith("| Model")]
    assert md == [table.to_markdown().rstrip("\n")] or md == [table.to_markdown()]
    assert "[+" in md[0] and md[0].count("**") == 2  # the LN-free gap, one lowest value in bold
    labels_shown = {b.label for b in at.get("download_button")}
    assert {"Table (Markdown)", "Table (CSV)", "All statistics (CSV)"} <= labels_shown
    assert any("seed=2357" in c.value and "4,400 rows" in c.value for c in at.caption)  # the OWT split note


def test_compare_percentile_ranges_and_medians(suite):
    from lnfree_core.analysis.cached import ce_eval

    at = S.open_page(new_app(suite), "pages/compare.py")
    at.segmented_control(key="compare.stat").set_value("p1-99").run()
    assert not at.exception
    md = [m.value for m in at.markdown if m.value.startswith("| Model")][0]
    lo, hi = ce_eval(str(suite["lnfree"]), data_spec(suite), cache_dir=None).summary.ranges["p1-99"]
    assert any("1th-99th percentile" in c.value or "1st-99th percentile" in c.value for c in at.caption)
    assert f"| tiny-lnfree | [{lo:.4f}, {hi:.4f}] |" in md
    at.segmented_control(key="compare.stat").set_value("median").run()
    md = [m.value for m in at.markdown if m.value.startswith("| Model")][0]
    med = ce_eval(str(suite["original"]), data_spec(suite), cache_dir=None).summary.median
    assert f"{med:.4f}" in md.split("| original |")[1].split("\n")[0]


def test_compare_two_datasets_with_the_same_file_name(suite, tmp_path):
    other = _tokens_file(tmp_path / "other" / "tokens.jsonl", rows=8)
    at = S.open_page(new_app(suite, **{"analysis.datasets": [str(suite["data"]), str(other)]}), "pages/compare.py")
    md = [m.value for m in at.markdown if m.value.startswith("| Model")][0]
    assert md.splitlines()[0] == "| Model | tokens.jsonl | tokens.jsonl (2) |"
    assert len(by_columns(at, "model", "dataset", "mean")) == 6
    at.selectbox(key="compare.dist_ds").set_value(str(other)).run()
    assert "tokens.jsonl (2)" in S.chart_title(chart_by_title(at, "per-token loss distribution"))

def test_compare_distribution_chart_has_every_model_on_log_bins(suite):
    at = S.open_page(new_app(suite), "pages/compare.py")
    chart = chart_by_title(at, "per-token loss distribution")
    (rows,) = S.layer_rows(chart, "line")
    assert set(rows["model"]) == {"original", "tiny-vanilla", "tiny-lnfree"}
    spec = S.chart_spec(chart)
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
    shares = rows.groupby("model")["share"].sum()
    assert all(abs(v - 1.0) < 1e-9 for v in shares)  # the log-y view drops empty bins only


def test_compare_runs_query_param_brings_the_base_model(suite):
    at = new_app(suite)
    del at.session_state["analysis.models"]
    at.query_params["runs"] = ["tiny-vanilla", "tiny-lnfree"]
    S.open_page(at, "pages/compare.py")
    assert at.session_state["analysis.models"] == specs(suite)
    assert list(by_columns(at, "model", "mean")["model"]) == ["original", "tiny-vanilla", "tiny-lnfree"]


def test_model_set_reports_unusable_models_and_adds_from_the_picker(suite, tmp_path):
    missing = str(tmp_path / "nowhere")
    at = S.open_page(new_app(suite, **{"analysis.models": [str(suite["original"]), missing]}), "pages/compare.py")
    assert any("does not exist" in w.value for w in at.warning)
    assert list(by_columns(at, "model", "mean")["model"]) == ["original"]
    at.radio(key="analysis.add.kind").set_value("run").run()
    at.selectbox(key="analysis.add.run").set_value("tiny-lnfree").run()
    at.button(key="analysis_add_model").click().run()
    assert at.session_state["analysis.models"][-1] == str(suite["runs"] / "tiny-lnfree")
    assert "tiny-lnfree" in list(by_columns(at, "model", "mean")["model"])


def test_model_set_data_and_sizes_carry_over_to_every_analysis_page(suite):
    at = S.open_page(new_app(suite), "pages/dla.py")
    at.number_input(key="analysis.n#w").set_value(4).run()
    at.multiselect(key="analysis.models#w").set_value(specs(suite)[1:]).run()
    for page in ANALYSIS_PAGES:
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.number_input(key="analysis.n#w").value == 4, page
        assert at.number_input(key="analysis.seq_len#w").value == SEQ_LEN, page
        assert at.multiselect(key="analysis.models#w").value == specs(suite)[1:], page
        assert at.session_state["analysis.n"] == 4 and at.session_state["analysis.models"] == specs(suite)[1:]
    assert at.selectbox(key="analysis.dataset#w").value == str(suite["data"])
    assert at.metric[0].label == "tiny-vanilla" and len(at.metric) == 2  # DLA: the two models left

# ---------------------------------------------------------------------------------------- Outliers
def test_outliers_ranking_first_exceedance_and_side_by_side(suite):
    from lnfree_core.analysis.cached import ce_eval
    from lnfree_core.analysis.outliers import (compare_token_losses, first_exceeding, format_report,
                                               rank_sequences)
    from lnfree_core.data import load_gpt2_tokenizer

    at = S.open_page(new_app(suite, **{"outliers.threshold": 4.0, "outliers.by": "max"}), "pages/outliers.py")
    assert at.selectbox(key="outliers.a").value == str(suite["lnfree"])
    assert at.selectbox(key="outliers.b").value == str(suite["original"])
    a = ce_eval(str(suite["lnfree"]), data_spec(suite), cache_dir=None)
    b = ce_eval(str(suite["original"]), data_spec(suite), cache_dir=None)
    ranked = by_columns(at, "rank", "sequence", "max CE")
    expect = rank_sequences(a.losses, "max", 10)
    assert list(ranked["sequence"]) == [r.index for r in expect]
    assert list(ranked["max CE"]) == [r.max for r in expect]
    # search by index: sequence 2 holds the rare token 120 at position 7
    at.number_input(key="outliers.seq").set_value(2).run()
    tok = load_gpt2_tokenizer()
    decode = lambda ids: tok.decode(list(ids))  # noqa: E731
    ex = first_exceeding(a.tokens[2], a.losses[2], decode, 4.0, 5)
    assert ex is not None
    notes = [e.value for e in at.error if "first token with CE > 4" in e.value]
    assert notes and f"id **{ex.token_id}** at position **{ex.position}**" in notes[0]
    assert f"`{' '.join(map(str, ex.context_ids))}`" in notes[0]
    html = [h.proto.body for h in at.get("html")]
    assert len(html) == 3  # model A, model B, their difference
    assert html[0].count("<span") == SEQ_LEN and "outline:2px" in html[0]
    assert f"position {ex.position} | id {ex.token_id}" in html[0]
    table = by_columns(at, "position", "token_id", "diff")
    rows = compare_token_losses(a.tokens[2], a.losses[2], b.losses[2], decode)
    assert list(table["token_id"]) == [r.token_id for r in rows]
    assert table["diff"].iloc[1:].tolist() == pytest.approx([r.diff for r in rows[1:]], abs=0)
    report = [c.value.rstrip("\n") for c in at.code if c.value.startswith("Sample 2 out of")]
    assert report == [format_report(2, N_SEQ, a.tokens[2], a.losses[2], decode, 4.0, 5).rstrip("\n")]


def test_outliers_alone_when_compared_with_nothing(suite):
    at = S.open_page(new_app(suite, **{"outliers.b": "(none)"}), "pages/outliers.py")
    assert not at.exception
    assert len(at.get("html")) == 1
    assert any("no token with CE > 50" in s.value for s in at.success)


# ---------------------------------------------------------------------------------------- First tokens
def test_first_tokens_norms_and_sink_rates_are_the_library_ones(suite):
    from lnfree_core.analysis.cached import first_token_eval

    at = S.open_page(new_app(suite, **{"first.threshold": 0.25}), "pages/first_tokens.py")
    direct = {s: first_token_eval(s, data_spec(suite), cache_dir=None) for s in specs(suite)}
    metrics = {m.label: m.value for m in at.metric}
    names = ["original", "tiny-vanilla", "tiny-lnfree"]
    for name, res in zip(names, direct.values()):
        rate = res.sink_rate(0.25)  # the paper's definition and interval are the page's defaults
        assert rate.definition == "query" and rate.ci_method == "batches"
        assert metrics[name] == f"{rate.rate:.1%}"
        assert any(f"[{rate.ci[0]:.1%}, {rate.ci[1]:.1%}]" == c.value for c in at.caption)
    assert any("batches of 8 sequences" in c.value for c in at.caption)
    (lines,) = S.layer_rows(chart_by_title(at, "residual norm at position 0"), "line")
    for name, res in zip(names, direct.values()):
        prof = res.stats.profile()  # centred, resid_pre/mid/post: the page's defaults
        assert len(prof["points"]) == 3 * 2
        mine = lines[(lines["model"] == name) & (lines["position"] == "first token")].sort_values("layer")
        assert mine["norm"].tolist() == pytest.approx(prof["first"], rel=1e-6)
        assert mine["point"].tolist() == prof["points"]


# ---------------------------------------------------------------------------------------- Confidence neurons
def test_confidence_scores_ablations_and_spectrum(suite):
    from lnfree_core.analysis.cached import confidence_eval

    at = S.open_page(new_app(suite, **{"cn.top_k": 2, "cn.marked": 3}), "pages/confidence.py")
    first = confidence_eval(str(suite["original"]), data_spec(suite), top_k=2, cache_dir=None)
    # by default every model ablates the first model's top-k (the paper's same neurons)
    direct = confidence_eval(str(suite["lnfree"]), data_spec(suite), top_k=2, neurons=first.top, cache_dir=None)
    spec = S.chart_spec(chart_by_title(at, "confidence neurons"))
    data = next(iter(S.chart_datasets(chart_by_title(at, "confidence neurons")).values()))
    mine = data[data["model"] == "tiny-lnfree"]
    assert len(mine) == 4 * 32  # every neuron of the last MLP layer (d_mlp = 4 d_model)
    assert mine[mine["top"] > 0].sort_values("top")["neuron"].tolist() == direct.scores.top(3)
    assert "facet" in spec
    single = by_columns(at, "model", "rank", "neuron", "delta_ce")
    abl = direct.entry.meta["ablation"]
    lf = single[single["model"] == "tiny-lnfree"]
    assert lf["neuron"].tolist() == first.top == direct.ablated
    box = by_columns(at, "model", "median", "q1", "q3")
    got = box[box["model"] == "tiny-lnfree"].iloc[0]
    assert got["median"] == pytest.approx(abl["abs_delta_ce"]["median"], rel=1e-9)
    assert lf["delta_ce"].tolist() == pytest.approx([r["delta_ce"] for r in abl["single"]], abs=0)
    (sv,) = S.layer_rows(chart_by_title(at, "unembedding spectrum"), "line")
    svals = sv[(sv["model"] == "tiny-lnfree") & (sv["series"] == "singular value (S / S0)")]["value"]
    assert svals.tolist() == pytest.approx(direct.svd.singular_values.tolist(), rel=1e-9)


# ---------------------------------------------------------------------------------------- DLA
def test_dla_nmae_is_zero_for_the_ln_free_model_only(suite):
    from lnfree_core.analysis.cached import dla_eval

    at = S.open_page(new_app(suite, **{"dla.n_boot": 200}), "pages/dla.py")
    metrics = {m.label: m.value for m in at.metric}
    direct = {s: dla_eval(s, data_spec(suite), cache_dir=None).nmae("sequence", n_boot=200) for s in specs(suite)}
    names = ["original", "tiny-vanilla", "tiny-lnfree"]
    for name, res in zip(names, direct.values()):
        assert metrics[name] == f"{res.overall:.2f}%"
    assert metrics["tiny-lnfree"] == "0.00%" and metrics["original"] != "0.00%"
    heat = next(iter(S.chart_datasets(chart_by_title(at, "NMAE per attention head")).values()))
    assert len(heat) == 3 * 2 * 4  # models x layers x heads
    orig = heat[heat["model"] == "original"].sort_values(["layer", "head"])["nmae"].tolist()
    assert orig == pytest.approx([v for row in direct[str(suite["original"])].per_head for v in row], rel=1e-12)
    summary = by_columns(at, "model", "NMAE (%)", "CI low")
    assert summary["NMAE (%)"].tolist() == pytest.approx([r.overall for r in direct.values()], rel=1e-12)


# ---------------------------------------------------------------------------------------- the demo suite
@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A folder whose ./lnfree_home/demo holds a tiny demo build (the app's defaults when offline)."""
    if importlib.util.find_spec("lnfree_core.demo") is None:
        pytest.skip("this install has no demo suite (lnfree_core.demo)")
    from lnfree_core import demo

    if not hasattr(demo, "build_demo") or "tiny" not in getattr(demo, "SIZES", {}):
        pytest.skip("lnfree_core.demo offers no tiny build")
    base = tmp_path_factory.mktemp("demo-home")
    demo.build_demo(base / "lnfree_home" / "demo", size="tiny")
    return base


def test_offline_defaults_are_the_demo_suite_and_tokens_decode_through_its_vocabulary(demo_home, monkeypatch):
    from lnfree_core.analysis.cached import DataSpec, ce_eval
    from lnfree_core.analysis.outliers import format_report
    from lnfree_core.data import load_gpt2_tokenizer
    from lnfree_core.data.vocab_map import load_vocab_map, to_gpt2_ids
    from lnfree_core.demo.paths import DATASET_NAMES, demo_dataset_path

    monkeypatch.chdir(demo_home)
    at = S.new_app(demo_home / "runs", timeout=120)
    at.session_state["analysis.cache_dir"] = str(demo_home / "cache")
    S.open_page(at, "pages/compare.py")
    assert at.session_state["analysis.models"] == ["demo:original", "demo:vanilla", "demo:ln-free"]
    folders = [str(demo_dataset_path(n)) for n in DATASET_NAMES]
    assert at.session_state["analysis.datasets"] == folders
    assert at.session_state["analysis.seq_len"] == 32  # the demo models' context, below the default 128
    md = [m.value for m in at.markdown if m.value.startswith("| Model")][0]
    assert md.splitlines()[0] == "| Model | " + " | ".join(DATASET_NAMES) + " |"
    assert "| demo ln-free |" in md and "[+" in md
    assert not at.error, [e.value for e in at.error]

    at.switch_page("pages/outliers.py").run()
    assert not at.exception and at.session_state["analysis.dataset"] == folders[-1]
    seq = int(at.number_input(key="outliers.seq").value)
    from pages._common.analysis_inputs import DEFAULT_N_SEQUENCES

    assert at.session_state["analysis.n"] == DEFAULT_N_SEQUENCES
    res = ce_eval("demo:ln-free", DataSpec(folders[-1], n=DEFAULT_N_SEQUENCES, seq_len=32),
                  cache_dir=str(demo_home / "cache"))
    vmap = load_vocab_map("demo:ln-free")
    assert vmap is not None and int(res.tokens.max()) < len(vmap)
    tok = load_gpt2_tokenizer()
    gpt2 = to_gpt2_ids(res.tokens[seq], vmap)  # the page shows GPT-2 ids, decoded with GPT-2's tokenizer
    assert (gpt2 != res.tokens[seq]).any()
    report = format_report(seq, len(res.losses), gpt2, res.losses[seq], lambda ids: tok.decode(list(ids)), 50.0, 5)
    assert [c.value.rstrip("\n") for c in at.code if c.value.startswith(f"Sample {seq} out of")] == [report.rstrip("\n")]
    text = [c.value for c in at.code][-2]  # the "Decoded:" block
    assert text == tok.decode([int(i) for i in gpt2])
    assert any("compact vocabulary" in c.value for c in at.caption)


# ---------------------------------------------------------------------------------------- UI-free helpers
def test_token_spans_escape_text_and_show_control_characters():
    from lnfree_core.analysis.outliers import TokenLoss, escape
    from pages._common.ui_data.token_view import display_token, token_spans_html

    rows = [TokenLoss(0, 27, "<b>", escape("<b>"), None), TokenLoss(1, 200, "\x0c", escape("\x0c"), 60.0),
            TokenLoss(2, 198, "\n", escape("\n"), 0.5), TokenLoss(3, 1, '"&', escape('"&'), 2.0)]
    html = token_spans_html(rows, [r.loss for r in rows], highlight=1, context=[0])
    assert "<b>" not in html and "&lt;b&gt;" in html and "&quot;&amp;" in html
    assert html.count("<span") == 4 and html.count("outline:2px") == 1
    assert html.count("text-decoration:underline") == 1
    assert "position 1 | id 200 | &#x27;\\x0c&#x27; | loss 60.0000" in html
    assert display_token("\x0c") == "\\x0c" and display_token("\n") == "⏎\n" and display_token(" the") == " the"
    assert display_token("\t") == "\\t" and display_token("") == "∅"


def test_loss_histogram_shares_and_log_bins():
    from pages._common.ui_data.analysis_frames import loss_histogram

    h = loss_histogram({"a": np.array([0.0, 1e-3, 0.5, 2.0, np.inf]), "b": np.array([3.0, 30.0])}, bins=10)
    assert set(h["model"]) == {"a", "b"}
    for _, g in h.groupby("model"):
        assert g["share"].sum() == pytest.approx(1.0)
    a = h[h["model"] == "a"]
    assert a["count"].sum() == 4 and a["count"].iloc[0] == 1  # inf left out; 0 counts in the first bin
    assert a["lo"].iloc[0] == pytest.approx(1e-6) and a["hi"].iloc[-1] == pytest.approx(30.0)
    b = loss_histogram({"b": np.array([0.01, 0.5, 1.0])}, bins=2)
    assert b["lo"].tolist() == pytest.approx([0.01, 0.1]) and b["count"].tolist() == [1, 2]
    ratios = (a["hi"] / a["lo"]).to_numpy()
    assert np.allclose(ratios, ratios[0])  # log-spaced


def test_model_labels_are_short_and_unique(tmp_path):
    from pages._common.ui_data.model_specs import model_kind, model_label, unique_labels

    (tmp_path / "x" / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "y" / "run").mkdir(parents=True)
    specs_ = ["demo:ln-free", "openai-community/gpt2", str(tmp_path / "x" / "run"), str(tmp_path / "y" / "run"),
              str(tmp_path / "x" / "run") + "@40"]
    assert [model_kind(s) for s in specs_] == ["demo", "hub", "run", "folder", "run"]
    assert model_label(specs_[0]) == "demo ln-free" and model_label(specs_[4]) == "run@40"
    assert list(unique_labels(specs_).values()) == ["demo ln-free", "openai-community/gpt2", "run", "run (2)",
                                                   "run@40"]


def test_first_tokens_and_confidence_pages_say_how_demo_numbers_relate_to_the_paper(demo_home, monkeypatch):
    monkeypatch.chdir(demo_home)
    at = S.new_app(demo_home / "runs", timeout=120)
    at.session_state["analysis.cache_dir"] = str(demo_home / "cache")
    for page, paper in (("pages/first_tokens.py", "55.3%"), ("pages/confidence.py", "-3%")):
        S.open_page(at, page)
        assert not at.exception and not at.error, page
        assert at.session_state["analysis.models"][0].startswith("demo:")
        notes = [c.value for c in at.caption if c.value.startswith("**Demo models**")]
        assert len(notes) == 1 and paper in notes[0] and "demo findings" in notes[0], page
