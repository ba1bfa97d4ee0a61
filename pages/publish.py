"""Publish: export a finished run as a stock Hugging Face model folder and push it to the Hub.

A thin page over lnfree_core.publish (an `st.Page` file). The token comes from HF_TOKEN (or the saved
`hf auth login`) or from a password field; it is handed to push_export for that one call, never
shown, never copied into other session keys, and the field is emptied on the rerun after a push.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from lnfree_core.publish import (
    PublishError,
    export_warnings,
    finished_runs,
    missing_export_files,
    prepare_export,
    push_export,
    reusable_export,
    split_model_card,
    validate_repo_id,
)
from pages._common.state import for_page, page_setup

page_setup()

K = "publish."  # widget-key prefix of this page
TOKEN_KEY = K + "token"
FORGET_KEY = K + "_forget_token"
RESULT_KEY = K + "_push_result"  # (kind, text) of the last push, shown after the rerun that empties the token


def _runs_root() -> Path:
    """The runs root chosen in the app's sidebar (./runs when the page runs on its own)."""
    return Path(str(st.session_state.get("runs_root", "runs") or "runs")).expanduser().resolve()


def _repo_id(text: str) -> str | None:
    """The valid repo id typed in, else None (with the reason shown under the field)."""
    if not text.strip():
        return None
    try:
        return validate_repo_id(text)
    except PublishError as e:
        st.caption(f":red[{e}]")
        return None


def _show_card(out: Path) -> None:
    """The model card that will be pushed: its metadata as YAML, its body rendered."""
    meta, body = split_model_card((out / "README.md").read_text(encoding="utf-8"))
    for w in export_warnings(out):
        st.warning(w)
    st.subheader("Model card")
    if meta:
        with st.expander("Card metadata (YAML)"):
            st.code(meta, language="yaml")
    with st.container(border=True):
        st.markdown(body)


def _export(run: Path, out: Path, rid: str, ce_md: str, allow_live: bool, overwrite: bool) -> None:
    with st.status(f"Exporting {run.name} to {out}...", expanded=True) as status:
        try:
            exported = prepare_export(run, out, rid, eval_table_md=ce_md.strip() or None, allow_live=allow_live,
                                      overwrite=overwrite)
        except PublishError as e:
            status.update(label="Export failed", state="error", expanded=True)
            st.error(for_page(str(e)), icon=":material/error:")
            return
        status.update(label=f"{'Exported' if exported else 'Export already up to date'}: {out}", state="complete")


def _push(out: Path, rid: str, private: bool, endpoint: str, token: str) -> None:
    """Push; the outcome is shown in the open (never in a collapsed box). After a successful push the
    token field is emptied at once (a rerun now, not on the user's next keystroke, which it would eat);
    after a failed one the token stays, so the push can be retried."""
    with st.status(f"Pushing {out} to {rid}...", expanded=True) as status:
        try:
            res = push_export(out, rid, private=private, token=token or None, endpoint=endpoint.strip() or None,
                              progress=status.write)
        except PublishError as e:
            status.update(label="Push failed", state="error", expanded=True)
            failure = for_page(str(e))
        else:
            status.update(label=f"Pushed to {rid}", state="complete")
            failure = None
    if failure is not None:
        st.error(failure, icon=":material/error:")
        return
    st.session_state[RESULT_KEY] = f"Published {'privately ' if private else ''}to {res.url} (commit `{res.commit[:12]}`)"
    st.session_state[FORGET_KEY] = True
    st.rerun()


def _token_field() -> str:
    """The password field (emptied after a push); says whether HF_TOKEN is set, never its value."""
    if st.session_state.pop(FORGET_KEY, False):
        st.session_state[TOKEN_KEY] = ""
    env = "HF_TOKEN is set and is used when this field is empty." if os.environ.get("HF_TOKEN") else \
        "HF_TOKEN is not set: enter a token with write access, or run `hf auth login` first."
    return st.text_input("Hugging Face token", type="password", key=TOKEN_KEY, help=env,
                         placeholder="hf_... (optional when HF_TOKEN is set)")


def main() -> None:
    st.title("Publish to the Hugging Face Hub")
    root = _runs_root()
    runs = finished_runs(root)
    if not runs:
        st.info(f"No finished runs under `{root}`. Train one on the Train page or with "
                "`python -m lnfree_core train`, then come back to export and publish it.")
        return
    names = [r.name for r in runs]
    name = st.selectbox("Finished run", names, key=K + "run")
    run = root / name
    out = Path(st.text_input("Export folder", value=str(root.parent / "exports" / name), key=f"{K}out.{name}",
                             help="Where the stock Hugging Face folder is written (and pushed from)."))
    rid = _repo_id(st.text_input("Repo id", key=K + "repo_id", placeholder="your-user/gpt2-ln-free"))
    private = st.checkbox("Private repo", value=True, key=K + "private",
                          help="A new repo is created private; a private push to an existing public repo is refused.")
    with st.expander("Model card and export options"):
        ce_md = st.text_area("CE table for the model card (Markdown, optional)", key=K + "ce_md",
                             placeholder="| Model | OpenWebText |\n|---|---|\n| gpt2 | 3.0 |")
        allow_live = st.checkbox("Export even with live LayerNorms (vanilla run)", key=K + "allow_live")
        overwrite = st.checkbox("Replace an earlier lnfree export in the export folder", key=K + "overwrite",
                                help="Only a folder holding an lnfree export (lnfree_export.json) is ever replaced; "
                                     "a run directory or any other folder is refused.")
    with st.expander("Hub connection", expanded=not os.environ.get("HF_TOKEN")):
        endpoint = st.text_input("Hub endpoint (optional)", key=K + "endpoint",
                                 placeholder="https://huggingface.co (or HF_ENDPOINT)")
        token = _token_field()

    if st.button("Export", key=K + "export_btn", disabled=rid is None,
                 help="Needs a repo id (the model card names it)." if rid is None else None):
        _export(run, out, rid, ce_md, allow_live, overwrite)

    missing = missing_export_files(out)
    if missing:
        todo = "Press Export to make one." if rid else "Type a repo id above (the model card names it), then press Export."
        st.info(f"`{out}` holds no export yet (missing: {', '.join(missing)}). {todo}")
    else:
        if rid and not reusable_export(run, out, rid, ce_md.strip() or None):
            st.warning("This export is not the newest checkpoint of the run, or its card names another repo id or "
                       "lacks the CE table: press Export to refresh it before pushing.")
        _show_card(out)

    done = st.session_state.pop(RESULT_KEY, None)
    if done:
        st.success(done, icon=":material/check_circle:")
    if st.button("Push to the Hub", key=K + "push_btn", type="primary", disabled=rid is None or bool(missing)):
        _push(out, rid, private, endpoint, token)


main()
