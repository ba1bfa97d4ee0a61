"""export_and_push on a tiny trained run: the real export (with the CE table in the card) reaches the
fake Hub intact, an up-to-date export is reused, and nothing of the token lands in the run or export."""

from __future__ import annotations

import json

import pytest
from fake_hub import TOKEN, FakeHub, files_containing, hub_env, snapshot, tiny_finished_run  # noqa: F401

from lnfree_core.publish import (
    ExportPushResult,
    PublishError,
    PublishInputError,
    export_and_push,
    finished_runs,
    reusable_export,
)

CE_TABLE = "| Model | OpenWebText |\n|---|---|\n| tiny-ln-free | **4.8123** |\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny GPT-2 trained until every LayerNorm is removed (runs/tiny; trained once per session)."""
    return tiny_finished_run(tmp_path_factory)


@pytest.fixture
def env(hub_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # lnfree's tokenizer: the bundled GPT-2 files, no Hub probe
    return hub_env


def test_export_and_push_sends_the_real_export_with_the_ce_table(env, finished_run, tmp_path):
    out = tmp_path / "exports" / "tiny"
    stages = []
    with FakeHub(token=TOKEN) as hub:
        res = export_and_push(finished_run, out, "alice/tiny-ln-free", private=True, token=TOKEN,
                              endpoint=hub.endpoint, eval_table_md=CE_TABLE, progress=stages.append)
    assert isinstance(res, ExportPushResult) and res.exported and res.export_dir == out
    repo = hub.repos["alice/tiny-ln-free"]
    assert repo.private and res.push.commit == repo.sha
    card = repo.files["README.md"].decode()
    assert CE_TABLE.strip() in card and "## Evaluation (mean cross-entropy)" in card
    assert 'from_pretrained("alice/tiny-ln-free")' in card and "layernorm-free" in card
    for name in ("README.md", "config.json", "model.safetensors", "lnfree_export.json", "tokenizer.json"):
        assert repo.files[name] == (out / name).read_bytes(), name
    assert json.loads(repo.files["lnfree_export.json"])["ln_free"] is True
    assert ".lnfree_local.json" not in repo.files and (out / ".lnfree_local.json").exists()  # local paths stay here
    assert str(finished_run) not in repo.files["lnfree_export.json"].decode()
    assert stages and not any(TOKEN in s for s in stages)
    assert files_containing(finished_run, TOKEN) == [] and files_containing(out, TOKEN) == []
    assert not env.exists()


def test_up_to_date_export_is_reused_and_a_stale_one_replaced(env, finished_run, tmp_path):
    out = tmp_path / "exp"
    with FakeHub(token=TOKEN) as hub:
        first = export_and_push(finished_run, out, "alice/a", token=TOKEN, endpoint=hub.endpoint)
        before = snapshot(out)
        assert reusable_export(finished_run, out, "alice/a")
        again = export_and_push(finished_run, out, "alice/a", token=TOKEN, endpoint=hub.endpoint)
        assert first.exported and not again.exported and snapshot(out) == before
        # another repo id (the card names it) or a CE table the card lacks: exported again, in place
        assert not reusable_export(finished_run, out, "alice/b")
        other = export_and_push(finished_run, out, "alice/b", token=TOKEN, endpoint=hub.endpoint,
                                eval_table_md=CE_TABLE)
    assert other.exported and 'from_pretrained("alice/b")' in (out / "README.md").read_text()
    assert CE_TABLE.strip() in hub.repos["alice/b"].files["README.md"].decode()
    assert hub.repos["alice/a"].files["model.safetensors"] == hub.repos["alice/b"].files["model.safetensors"]


def test_unrelated_folder_is_not_overwritten(env, finished_run, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with FakeHub(token=TOKEN) as hub:
        with pytest.raises(PublishInputError, match="not empty"):
            export_and_push(finished_run, out, "alice/x", token=TOKEN, endpoint=hub.endpoint)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and hub.requests == []


def test_bad_repo_id_or_no_token_fail_before_exporting(env, finished_run, tmp_path):
    with pytest.raises(PublishInputError, match="USER/NAME"):
        export_and_push(finished_run, tmp_path / "e1", "no-namespace", token=TOKEN)
    with pytest.raises(PublishInputError, match="no Hugging Face token"):
        export_and_push(finished_run, tmp_path / "e2", "alice/x")
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


def test_failed_push_keeps_the_export_for_a_retry(env, finished_run, tmp_path):
    out = tmp_path / "exp"
    with FakeHub(token=TOKEN, fail={"commit": 403}) as hub:
        with pytest.raises(PublishError, match="403") as ei:
            export_and_push(finished_run, out, "alice/x", token=TOKEN, endpoint=hub.endpoint)
    assert TOKEN not in str(ei.value)
    kept = snapshot(out)
    assert {"README.md", "config.json", "model.safetensors"} <= set(kept)
    with FakeHub(token=TOKEN) as hub:
        res = export_and_push(finished_run, out, "alice/x", token=TOKEN, endpoint=hub.endpoint)
    assert not res.exported and snapshot(out) == kept and "model.safetensors" in hub.repos["alice/x"].files


def test_finished_runs_lists_only_finished_runs(finished_run, tmp_path):
    root = finished_run.parent
    assert finished_runs(root) == [finished_run]
    running = root.parent / "other_root" / "running"
    (running / "checkpoints").mkdir(parents=True)
    (running / "status.json").write_text(json.dumps({"state": "running"}))
    assert finished_runs(running.parent) == [] and finished_runs(tmp_path / "missing") == []
