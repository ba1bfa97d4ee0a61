"""Outliers: the high-loss sequences of a model (ranked by mean or by max token CE), one sequence's
tokens coloured by their loss, two models side by side with the per-token difference, and the first
token over a CE threshold with the tokens before it (the paper's appendix E.1)."""

from __future__ import annotations

from functools import partial

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached import ce_eval
from lnfree_core.analysis.outliers import (
    DEFAULT_CONTEXT,
    DEFAULT_THRESHOLD,
    compare_token_losses,
    escape,
    first_exceeding,
    format_report,
    rank_sequences,
    sequences_exceeding,
    token_losses,
)
from pages._common.analysis_inputs import one_dataset_page
from pages._common.analysis_jobs import data_spec, evaluate_models, gpt2_decoder, gpt2_ids, model_decoder
from pages._common.charts import fit_chart, model_color
from pages._common.state import PERSIST, page_setup, seed
from pages._common.ui_data.analysis_frames import ranked_frame, token_frame
from pages._common.ui_data.token_view import token_spans_html

page_setup()

NONE = "(none)"
SEQ_KEY = "outliers.seq"


def pick_from_table(key: str, indices: list[int]) -> None:
    """The ranked table's row selection sets the sequence shown."""
    rows = st.session_state[key].selection.rows
    if rows:
        st.session_state[SEQ_KEY] = int(indices[rows[0]])


def exceedance_note(label: str, ex, threshold: float) -> None:
    if ex is None:
        st.success(f"**{label}**: no token with CE > {threshold:g}.", icon=":material/check_circle:")
        return
    ctx_ids = " ".join(map(str, ex.context_ids))
    st.error(
        f"**{label}**: first token with CE > {threshold:g} is id **{ex.token_id}** at position **{ex.position}** "
        f"(CE {ex.loss:.4g}), decoded (unicode_escape) `'{ex.escaped}'`.  \n"
        f"The {len(ex.context_ids)} tokens before it: `{ctx_ids}`, decoded (unicode_escape) "
        f"`'{ex.context_escaped}'`.", icon=":material/priority_high:")


def loss_chart(df: pd.DataFrame, labels: list[str], order: list[str], log: bool) -> alt.Chart:
    long = df.melt(id_vars=["position", "token_id", "token"], value_vars=labels, var_name="model", value_name="loss")
    long = long.dropna(subset=["loss"])
    if log:
        long = long[long["loss"] > 0]
    chart = (
        alt.Chart(long)
        .mark_line(point=alt.OverlayMarkDef(size=16), strokeWidth=1.2)
        .encode(
            x=alt.X("position:Q", title="token position"),
            y=alt.Y("loss:Q", title="CE (nats)", scale=alt.Scale(type="log" if log else "linear")),
            color=model_color(order),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("position:Q"), alt.Tooltip("token_id:Q", title="id"),
                     alt.Tooltip("token:N"), alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(title="per-token loss")
    )
    return fit_chart(chart, 220)


def diff_chart(df: pd.DataFrame, title: str) -> alt.Chart:
    data = df.dropna(subset=["diff"])
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("position:Q", title="token position"),
            y=alt.Y("diff:Q", title="CE difference (nats)"),
            color=alt.condition("datum.diff > 0", alt.value("#dc2626"), alt.value("#2563eb")),
            tooltip=[alt.Tooltip("position:Q"), alt.Tooltip("token_id:Q", title="id"), alt.Tooltip("token:N"),
                     alt.Tooltip("diff:Q", format="+.4f")],
        )
        .properties(title=title)
    )
    return fit_chart(chart, 160)


specs, labels, dataset, n, seq_len, split, settings = one_dataset_page(
    "Outliers",
    "Which sequences a model finds hardest, and where in them the loss blows up: the paper traces "
    "GPT-2 XL LN-free's mean CE of 130 on The Pile to three sequences with tokens that OpenWebText lacks "
    "(appendix E.1).")

c1, c2 = st.columns(2)
if st.session_state.get("outliers.a") not in specs:
    st.session_state["outliers.a"] = specs[-1]
spec_a = c1.selectbox("Model", specs, key="outliers.a", format_func=labels.get)
others = [NONE] + [s for s in specs if s != spec_a]
if st.session_state.get("outliers.b") not in others:
    st.session_state["outliers.b"] = others[1] if len(others) > 1 else NONE
spec_b = c2.selectbox("Compare with", others, key="outliers.b", format_func=lambda s: labels.get(s, s))
c1, c2, c3 = st.columns(3)
seed("outliers.by", "mean")
by = c1.segmented_control("Rank by", ["mean", "max"], key="outliers.by", **PERSIST,
                          format_func=lambda b: f"{b} token CE", help="A sequence's mean token CE, or its largest.") \
    or "mean"
seed("outliers.threshold", DEFAULT_THRESHOLD)
threshold = c2.number_input("CE threshold (nats)", min_value=0.0, step=5.0, key="outliers.threshold", **PERSIST,
                            help="A token whose CE exceeds this is flagged; the paper uses 50.")
seed("outliers.top", 10)
top = c3.number_input("Sequences listed", min_value=1, max_value=1000, step=5, key="outliers.top", **PERSIST)
order = [labels[s] for s in specs]

data = data_spec(dataset, n, seq_len, split)
chosen = [spec_a] + ([spec_b] if spec_b != NONE else [])
results = evaluate_models(ce_eval, chosen, labels, data, settings)
if spec_a not in results:
    st.stop()
res_a, res_b = results[spec_a], results.get(spec_b)
losses, tokens = res_a.losses, res_a.tokens
n_seq = int(losses.shape[0])
if res_b is not None and (res_b.tokens.shape != tokens.shape or (res_b.tokens[:] != tokens[:]).any()):
    st.warning(f"{labels[spec_b]} was evaluated on other tokens; it is left out of the comparison.")
    res_b = None

exceeding = sequences_exceeding(losses, threshold)
ranked = rank_sequences(losses, by, int(top))
st.header(f"High-loss sequences of {labels[spec_a]}")
m1, m2, m3 = st.columns(3)
m1.metric("Sequences", n_seq)
m2.metric(f"With a token over {threshold:g}", len(exceeding))
m3.metric("Mean CE", f"{res_a.summary.mean:.4f}", help="Over all scored tokens of these sequences.")
st.caption(f"Over {n_seq} sequences of {tokens.shape[1]} tokens ({res_a.summary.tokens} scored tokens).")
table = ranked_frame(ranked, exceeding)
indices = table["sequence"].tolist()
st.dataframe(table, hide_index=True, width="stretch", key="outliers.table", on_select=partial(
    pick_from_table, "outliers.table", indices), selection_mode="single-row",
    column_config={"mean CE": st.column_config.NumberColumn(format="%.4f"),
                   "max CE": st.column_config.NumberColumn(format="%.4f")})
st.caption("Select a row to show that sequence below.")
if len(exceeding):
    st.caption(f"Sequences with a token over {threshold:g}: " + ", ".join(map(str, exceeding[:50].tolist()))
               + (" ..." if len(exceeding) > 50 else ""))

st.header("One sequence")
if st.session_state.get(SEQ_KEY) is None or not 0 <= int(st.session_state[SEQ_KEY]) < n_seq:
    st.session_state[SEQ_KEY] = indices[0] if indices else 0
c1, c2, c3 = st.columns([1, 1, 1])
seq = int(c1.number_input("Sequence index", min_value=0, max_value=n_seq - 1, step=1, key=SEQ_KEY,
                          help=f"Any of the {n_seq} sequences (0-based, in dataset order)."))
seed("outliers.context", DEFAULT_CONTEXT)
context = int(c2.number_input("Tokens before the first exceedance", min_value=1, max_value=50,
                              key="outliers.context", **PERSIST))
seed("outliers.vmax", 10.0)
vmax = float(c3.number_input("Colour scale top (nats)", min_value=0.5, step=1.0, key="outliers.vmax", **PERSIST,
                             help="Losses at or above this get the darkest red; differences of this size the "
                                  "darkest red/blue."))
to_gpt2 = gpt2_ids(spec_a, dataset)
decode = gpt2_decoder() if to_gpt2 is not None else model_decoder(spec_a)
toks, la = (tokens[seq] if to_gpt2 is None else np.asarray(to_gpt2(tokens[seq]))), losses[seq]
if to_gpt2 is not None:
    st.caption("This model uses a compact vocabulary (the demo suite's): its token ids are shown as GPT-2 ids.")
rows_a = token_losses(toks, la, decode)
ex_a = first_exceeding(toks, la, decode, threshold, context)
exceedance_note(labels[spec_a], ex_a, threshold)
if res_b is not None:
    ex_b = first_exceeding(toks, res_b.losses[seq], decode, threshold, context)
    exceedance_note(labels[spec_b], ex_b, threshold)


def spans(rows, values, ex, **kw) -> None:
    ctx = range(ex.position - len(ex.context_ids), ex.position) if ex is not None else ()
    st.html(token_spans_html(rows, values, highlight=None if ex is None else ex.position, context=ctx, **kw))


st.caption("Tokens coloured by their CE (hover a token for its position, id and loss); the first token over the "
           "threshold is outlined, the tokens before it are underlined. Position 0 has no loss.")
if res_b is None:
    spans(rows_a, [r.loss for r in rows_a], ex_a, vmax=vmax)
    df = token_frame(rows_a, labels[spec_a])
    st.altair_chart(loss_chart(df, [labels[spec_a]], order, st.toggle("Log scale", True, key="outliers.log")),
                    width="stretch")
else:
    diffs = compare_token_losses(toks, la, res_b.losses[seq], decode)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**{labels[spec_a]}**")
        spans(rows_a, [r.loss for r in rows_a], ex_a, vmax=vmax)
    with right:
        st.markdown(f"**{labels[spec_b]}**")
        spans(diffs, [r.loss_b for r in diffs], ex_b, vmax=vmax)
    st.markdown(f"**Difference** ({labels[spec_b]} minus {labels[spec_a]}: red = higher loss for "
                f"{labels[spec_b]}, blue = lower)")
    spans(diffs, [r.diff for r in diffs], None, vmax=vmax, diverging=True, value_name="diff")
    df = token_frame(diffs, labels[spec_a], labels[spec_b])
    st.altair_chart(loss_chart(df, [labels[spec_a], labels[spec_b]], order,
                               st.toggle("Log scale", True, key="outliers.log")), width="stretch")
    st.altair_chart(diff_chart(df, f"{labels[spec_b]} minus {labels[spec_a]}"), width="stretch")

with st.expander("Per-token table"):
    st.dataframe(df, hide_index=True, width="stretch")
report = format_report(seq, n_seq, toks, la, decode, threshold, context)
with st.expander("Report (as in the paper's appendix E.1)"):
    st.code(report, language=None)
    st.download_button("Download report", report, file_name=f"sequence_{seq}.txt", mime="text/plain",
                       key="outliers_dl_report", icon=":material/download:")
with st.expander("Decoded text"):
    text = decode([int(t) for t in toks])
    st.markdown("Decoded:")
    st.code(text, language=None, wrap_lines=True)
    st.markdown("Decoded (unicode_escape):")
    st.code(escape(text), language=None, wrap_lines=True)
