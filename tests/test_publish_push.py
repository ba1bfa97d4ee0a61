"""push_export against a fake Hub on 127.0.0.1: what the Hub receives, the private flag, where the token
may (not) appear, and clear PublishErrors that leave the export folder untouched."""

from __future__ import annotations

import logging
import socket
import traceback

import huggingface_hub.constants
import pytest
from fake_hub import TOKEN, FakeHub, files_containing, hub_env, make_export_dir, snapshot  # noqa: F401

from lnfree_core.publish import (
    PublishError,
    PublishInputError,
    PushResult,
    push_export,
    resolve_token,
    scrub,
    validate_repo_id,
)


@pytest.fixture
def export_dir(tmp_path):
    return make_export_dir(tmp_path / "export")


@pytest.fixture
def hub():
    with FakeHub(token=TOKEN) as h:
        yield h


def _no_token_anywhere(text: str) -> None:
    assert TOKEN not in text and TOKEN[3:] not in text


def test_push_uploads_card_config_and_weights_byte_identical(hub_env, export_dir, hub, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    before = snapshot(export_dir)
    stages = []
    res = push_export(export_dir, "alice/tiny-ln-free", private=True, token=TOKEN, endpoint=hub.endpoint,
                      commit_message="first push", progress=stages.append)
    assert isinstance(res, PushResult)
    assert res.url == f"{hub.endpoint}/alice/tiny-ln-free" and res.repo_id == "alice/tiny-ln-free"
    repo = hub.repos["alice/tiny-ln-free"]
    assert res.commit == repo.sha and res.commit_url.endswith(res.commit)
    assert repo.private is True and hub.create_payloads[0]["visibility"] == "private"
    for name in ("README.md", "config.json", "model.safetensors", "generation_config.json"):
        assert repo.files[name] == (export_dir / name).read_bytes(), name
    assert set(repo.files) == set(before)
    assert repo.commits[-1]["summary"] == "first push"
    assert all(r.authorized for r in hub.requests)  # the token was used ...
    assert snapshot(export_dir) == before  # ... the folder untouched
    assert stages and all(TOKEN not in s for s in stages)
    # ... and the token is nowhere: not in logs (debug level), output, files, or the token file
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, repr(res), *stages):
        _no_token_anywhere(text)
    assert "(authenticated: True)" in caplog.text  # huggingface_hub's debug lines really were captured
    assert files_containing(export_dir, TOKEN) == [] and not hub_env.exists()


def test_public_push_and_second_push_reuses_the_repo(hub_env, export_dir, hub):
    first = push_export(export_dir, "alice/tiny", token=TOKEN, endpoint=hub.endpoint)
    assert hub.repos["alice/tiny"].private is False and hub.create_payloads[0]["visibility"] == "public"
    (export_dir / "README.md").write_text("---\nlibrary_name: transformers\n---\n# tiny v2\n")
    second = push_export(export_dir, "alice/tiny", token=TOKEN, endpoint=hub.endpoint)
    assert second.commit != first.commit and len(hub.repos["alice/tiny"].commits) == 2
    assert hub.repos["alice/tiny"].files["README.md"].endswith(b"# tiny v2\n")


def test_weights_routed_through_lfs_arrive_byte_identical(hub_env, export_dir, monkeypatch):
    # The Hub tells the client to send *.safetensors as LFS; without hf_xet the client uses the LFS batch API.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub(token=TOKEN, lfs_suffixes=(".safetensors",)) as hub:
        push_export(export_dir, "alice/lfs", token=TOKEN, endpoint=hub.endpoint)
        calls = hub.endpoints_called()
    assert "lfs_batch" in calls and "lfs_upload" in calls
    repo = hub.repos["alice/lfs"]
    assert repo.commits[-1]["modes"]["model.safetensors"] == "lfsFile"
    assert repo.commits[-1]["modes"]["config.json"] == "file"
    assert repo.files["model.safetensors"] == (export_dir / "model.safetensors").read_bytes()


def test_failed_lfs_upload_reports_the_storage_status(hub_env, export_dir, monkeypatch):
    # huggingface_hub wraps a failed LFS upload in a RuntimeError; the HTTP status underneath is reported.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    before = snapshot(export_dir)
    with FakeHub(token=TOKEN, lfs_suffixes=(".safetensors",), fail={"lfs_upload": 403}) as hub:
        with pytest.raises(PublishError, match="403 Forbidden") as ei:
            push_export(export_dir, "alice/lfs", token=TOKEN, endpoint=hub.endpoint)
    assert ei.value.status == 403 and "commit" not in hub.endpoints_called()
    assert hub.repos["alice/lfs"].files == {} and snapshot(export_dir) == before


def test_token_from_hf_token_env(hub_env, export_dir, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert resolve_token(None) == TOKEN and resolve_token("  ") == TOKEN
    push_export(export_dir, "bob/env-token", endpoint=hub.endpoint)
    assert all(r.authorized for r in hub.requests)


@pytest.mark.parametrize("fail,status,words", [
    ({"create": 500}, 500, "server error"),
    ({"create": 401}, 401, "rejected the token"),
    ({"commit": 403}, 403, "write access"),
    ({"commit": 409}, 409, "conflict"),
])
def test_failing_hub_gives_clear_error_and_leaves_folder(hub_env, export_dir, fail, status, words):
    before = snapshot(export_dir)
    with FakeHub(token=TOKEN, fail=fail, echo_auth_in_errors=True) as hub:
        with pytest.raises(PublishError) as ei:
            push_export(export_dir, "alice/fails", token=TOKEN, endpoint=hub.endpoint)
    err = ei.value
    assert not isinstance(err, PublishInputError)
    assert err.status == status and words in str(err) and "alice/fails" in str(err)
    assert "unchanged" in str(err) and "retry" in str(err)
    assert err.__cause__ is None and err.__context__ is None  # no chained error holds the request
    assert "received Authorization" in str(err)  # the server's message is passed on ...
    _no_token_anywhere("".join(traceback.format_exception(err)))  # ... with the token scrubbed
    _no_token_anywhere(repr(err))
    assert snapshot(export_dir) == before


def test_wrong_token_is_refused_without_echoing_it(hub_env, export_dir, hub):
    wrong = "hf_WrongTokenAlsoSecret99887766"
    with pytest.raises(PublishError, match="401") as ei:
        push_export(export_dir, "alice/x", token=wrong, endpoint=hub.endpoint)
    assert wrong not in "".join(traceback.format_exception(ei.value))


def test_unreachable_hub_is_a_network_error(hub_env, export_dir):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    before = snapshot(export_dir)
    with pytest.raises(PublishError, match="could not reach the Hub") as ei:
        push_export(export_dir, "alice/x", token=TOKEN, endpoint=f"http://127.0.0.1:{port}")
    assert "--endpoint" in str(ei.value) and snapshot(export_dir) == before
    _no_token_anywhere("".join(traceback.format_exception(ei.value)))


def test_offline_mode_says_so(hub_env, export_dir, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        push_export(export_dir, "alice/x", token=TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []


def test_private_push_to_existing_public_repo_is_refused(hub_env, export_dir, hub):
    hub.add_repo("alice/public", private=False)
    with pytest.raises(PublishError, match="already exists and is public"):
        push_export(export_dir, "alice/public", private=True, token=TOKEN, endpoint=hub.endpoint)
    assert "commit" not in hub.endpoints_called() and hub.repos["alice/public"].files == {}


@pytest.mark.parametrize("missing,words", [("README.md", "README.md"), ("config.json", "config.json"),
                                           ("model.safetensors", "safetensors")])
def test_incomplete_export_says_what_is_missing_and_how_to_export(hub_env, export_dir, hub, missing, words):
    (export_dir / missing).unlink()
    with pytest.raises(PublishInputError, match=words) as ei:
        push_export(export_dir, "alice/x", token=TOKEN, endpoint=hub.endpoint)
    assert "python -m lnfree_core export RUN_DIR OUT_DIR" in str(ei.value)
    assert hub.requests == []


def test_bad_input_is_refused_before_contacting_the_hub(hub_env, export_dir, hub, tmp_path):
    for bad in ("noslash", "a/b/c", "alice/", "/x", "alice/bad name", "al--ice/x", "alice/x.git", "a/" + "n" * 97):
        with pytest.raises(PublishInputError, match="USER/NAME"):
            push_export(export_dir, bad, token=TOKEN, endpoint=hub.endpoint)
    assert validate_repo_id(" alice/gpt2-ln_free.v1 ") == "alice/gpt2-ln_free.v1"
    with pytest.raises(PublishInputError, match="no Hugging Face token"):
        push_export(export_dir, "alice/x", endpoint=hub.endpoint)
    with pytest.raises(PublishInputError, match="endpoint"):
        push_export(export_dir, "alice/x", token=TOKEN, endpoint=f"http://user:{TOKEN}@127.0.0.1:1")
    with pytest.raises(PublishInputError, match="not a model export"):
        push_export(tmp_path / "nope", "alice/x", token=TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []


def test_export_folder_holding_the_token_is_not_published(hub_env, export_dir, hub):
    (export_dir / "notes.txt").write_text(f"token={TOKEN}\n")
    with pytest.raises(PublishInputError, match="notes.txt contains your Hugging Face token") as ei:
        push_export(export_dir, "alice/x", token=TOKEN, endpoint=hub.endpoint)
    _no_token_anywhere(str(ei.value))
    assert hub.requests == []


def test_scrub_masks_secrets_token_shapes_and_bearer():
    text = f"a {TOKEN} b hf_AnotherLooking1234567 c Authorization: Bearer xyz.secret d"
    s = scrub(text, TOKEN)
    assert TOKEN not in s and "hf_AnotherLooking1234567" not in s and "xyz.secret" not in s
    assert s.startswith("a *** b hf_*** c Authorization: Bearer ***")
