"""Publish an lnfree export (a stock Hugging Face model folder) to the Hugging Face Hub.

    push_export(export_dir, repo_id, private=..., token=..., endpoint=...) -> PushResult(url, commit)
    export_and_push(run_dir, out_dir, repo_id, ...) -> ExportPushResult   (export or reuse, then push)

The token comes from the `token` argument, else from huggingface_hub's usual lookup (the HF_TOKEN
environment variable, then the token saved by `hf auth login`). It is only ever sent in the
Authorization header: it is never written to disk, logged, printed, put in a URL, or left in an
exception message (every error text surfaced here is scrubbed of it).

Every failure raises PublishError with a message that says why and what to do; bad input (missing
export files, a malformed repo id, no token) raises its subclass PublishInputError. A push never
modifies the export folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .export import LOCAL_SOURCE_FILE, ExportError, export_model
from .export_metadata import read_metadata
from .export_precision import precision_warning
from .models import resolve_checkpoint
from .rundir import read_status

EXPORT_HINT = "make one with `python -m lnfree_core export RUN_DIR OUT_DIR`"
TOKEN_HELP = ("set HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens) "
              "or run `hf auth login`")
DEFAULT_COMMIT_MESSAGE = "Upload LayerNorm-free GPT-2 exported with lnfree"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REPO_ID_RE = re.compile(rf"^{_NAME}/{_NAME}$")
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{8,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_SCAN_LIMIT = 16 * 1024 * 1024  # files this large are not searched for a leaked token (weights)

Progress = Callable[[str], None]


class PublishError(RuntimeError):
    """A push failed; the message says why and what to do. `status`: the Hub's HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PublishInputError(PublishError, ValueError):
    """The push was refused before contacting the Hub: bad export folder, repo id or missing token."""


@dataclass(frozen=True)
class PushResult:
    """Where the export went: the repository page `url` and the `commit` id of the upload."""

    url: str
    commit: str
    repo_id: str = ""
    commit_url: str = ""


@dataclass(frozen=True)
class ExportPushResult:
    """Outcome of export_and_push: the folder pushed, whether it was exported now, and the push."""

    export_dir: Path
    exported: bool
    push: PushResult


# --------------------------------------------------------------------------------------------- input
def scrub(text: str, *secrets: str | None) -> str:
    """`text` with each secret, anything shaped like an HF token and any Bearer credential masked."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return _BEARER.sub(r"\1***", _TOKEN_LIKE.sub("hf_***", text))


def validate_repo_id(repo_id: str) -> str:
    """`repo_id` stripped if it is USER/NAME as the Hub accepts it, else PublishInputError."""
    rid = (repo_id or "").strip()
    if not REPO_ID_RE.match(rid) or "--" in rid or ".." in rid or rid.endswith(".git"):
        raise PublishInputError(
            f"repo id {rid!r} is not of the form USER/NAME (e.g. alice/gpt2-ln-free): one '/', then letters, "
            "digits, '-', '_' or '.', at most 96 characters each, no '--' or '..', not ending in .git")
    return rid


def missing_export_files(export_dir: str | Path) -> list[str]:
    """The files a publishable export needs that `export_dir` lacks (empty list: complete)."""
    d = Path(export_dir)
    if not d.is_dir():
        return ["the folder itself"]
    missing = [n for n in ("config.json", "README.md") if not (d / n).is_file()]
    if not any(d.glob("*.safetensors")):
        missing.insert(1, "*.safetensors weights")
    return missing


def check_export_dir(export_dir: str | Path) -> Path:
    """`export_dir` as a Path if it holds config.json, *.safetensors and README.md; else PublishInputError."""
    missing = missing_export_files(export_dir)
    if missing:
        raise PublishInputError(f"{export_dir} is not a model export (missing: {', '.join(missing)}); "
                                f"{EXPORT_HINT}")
    return Path(export_dir)


def resolve_token(token: str | None = None) -> str:
    """The token to push with: `token`, else HF_TOKEN / the saved login; PublishInputError if none."""
    if token and token.strip():
        return token.strip()

    try:
        found = get_token()
    except Exception as e:  # e.g. a failed OIDC exchange when HF_OIDC_RESOURCE is set
        raise PublishInputError(f"could not read a Hugging Face token ({scrub(str(e))}); {TOKEN_HELP}") from None
    if not found:
        raise PublishInputError(f"no Hugging Face token found: {TOKEN_HELP}")
    return found


def _check_endpoint(endpoint: str) -> None:
    """PublishInputError unless `endpoint` is a plain http(s) base URL (no credentials in it)."""
    try:
        parts = urlsplit(endpoint)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
    except ValueError:
        ok = False
    if not ok:
        raise PublishInputError("endpoint must be an http(s) base URL without credentials, like "
                                "https://huggingface.co")


def _check_no_token_in_files(folder: Path, token: str) -> None:
    """Refuse to publish a folder whose (non-weight) files contain the token itself."""
    needle = token.encode()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".safetensors" or path.stat().st_size > _SCAN_LIMIT:
            continue
        if needle in path.read_bytes():
            raise PublishInputError(f"{path} contains your Hugging Face token; remove it from the export "
                                    "folder before publishing (and revoke the token if it was shared)")


def _folder_files(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)))


# --------------------------------------------------------------------------------------------- errors
def _hub_advice(status: int | None, repo_id: str) -> str:
    """What a Hub HTTP status means for a push, and what to do about it."""
    namespace = repo_id.split("/")[0]
    if status == 401:
        return f"the Hub rejected the token (401 Unauthorized): it is invalid, expired or revoked; {TOKEN_HELP}"
    if status == 403:
        return (f"the token may not write to '{namespace}' (403 Forbidden): use a token with write access "
                f"(a fine-grained token needs write permission on '{namespace}'), or a repo id under your "
                "own user name")
    if status == 404:
        return f"'{repo_id}' was not found (404): check the repo id and that the token can see it"
    if status == 409:
        return (f"conflict on '{repo_id}' (409): another push may be running, or the name is taken by a "
                "repo of another type; retry, or choose another repo id")
    if status == 413:
        return "the Hub refused the upload as too large (413)"
    if status == 429:
        return "the Hub is rate-limiting this token (429): wait a few minutes and retry"
    if status is not None and status >= 500:
        return f"the Hub had a server error ({status}): try again later (https://status.huggingface.co)"
    return f"the Hub answered with HTTP {status}"


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from (huggingface_hub wraps some HTTP errors)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen and len(seen) < 10:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _explain(err: BaseException, repo_id: str, endpoint: str, token: str) -> PublishError:
    """A PublishError for a failure of huggingface_hub (the token scrubbed from every part)."""
    retry = " The export folder is unchanged; run the push again to retry (an existing repo is reused)."
    chain = _chain(err)
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return PublishError("HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: unset it to push to the Hub.")
    http = next((e for e in chain if isinstance(e, HfHubHTTPError)), None)
    if http is not None:
        status = http.response.status_code if http.response is not None else None
        detail = (getattr(http, "server_message", None) or "").strip()
        detail = f" Server said: {scrub(detail, token)[:500]}." if detail else ""
        return PublishError(f"push to {repo_id} failed: {_hub_advice(status, repo_id)}.{detail}{retry}", status)
    net = next((e for e in chain if isinstance(e, (ConnectionError, TimeoutError, OSError))
                or type(e).__module__.startswith("httpx")), None)
    if net is not None:
        return PublishError(f"could not reach the Hub at {endpoint}: {scrub(str(net), token)[:500]}. Check the "
                            f"network, proxy settings and the endpoint (--endpoint / HF_ENDPOINT).{retry}")
    return PublishError(f"push to {repo_id} failed: {type(err).__name__}: {scrub(str(err), token)[:500]}.{retry}")


# --------------------------------------------------------------------------------------------- push
def push_export(export_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                endpoint: str | None = None, commit_message: str | None = None,
                progress: Progress | None = None) -> PushResult:
    """Create `repo_id` on the Hub (if needed; `private` for a new repo) and upload `export_dir` to it.

    `endpoint`: the Hub's base URL (default: HF_ENDPOINT or https://huggingface.co). `progress` is
    called with a short line before each stage. A private push to an existing public repo is refused
    before anything is uploaded.
    """
    say = progress or (lambda _msg: None)
    folder = check_export_dir(export_dir)
    rid = validate_repo_id(repo_id)
    if endpoint is not None:
        _check_endpoint(endpoint)
    tok = resolve_token(token)
    _check_no_token_in_files(folder, tok)

    base = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=base, token=tok)
    failure: PublishError | None = None
    try:
        say(f"creating {rid} on {base} if needed ({'private' if private else 'public'})")
        repo_url = api.create_repo(rid, private=private, exist_ok=True)
        if private and not api.repo_info(rid).private:
            raise PublishError(f"{rid} already exists and is public, but a private push was asked for; nothing "
                               "was uploaded. Make the repo private in its settings on the Hub, or choose "
                               "another repo id.")
        say(f"uploading {len(_folder_files(folder))} files from {folder}")
        info = api.upload_folder(repo_id=rid, folder_path=str(folder), ignore_patterns=[LOCAL_SOURCE_FILE],
                                 commit_message=commit_message or DEFAULT_COMMIT_MESSAGE)
    except PublishError:
        raise
    except Exception as e:
        failure = _explain(e, rid, base, tok)
    if failure is not None:  # raised here, outside the handler: no chained exception carries the request
        raise failure
    say(f"pushed commit {info.oid[:10]}")
    return PushResult(url=scrub(str(repo_url), tok), commit=info.oid, repo_id=rid,
                      commit_url=scrub(str(info.commit_url), tok))


# --------------------------------------------------------------------------------------------- export + push
def _same_path(a: str | Path | None, b: str | Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def reusable_export(run_dir: str | Path, out_dir: str | Path, repo_id: str,
                    eval_table_md: str | None = None) -> bool:
    """Whether `out_dir` already holds a complete export of `run_dir`'s newest checkpoint whose model
    card names `repo_id` (and includes `eval_table_md`, if given)."""
    out = Path(out_dir)
    try:
        meta = json.loads((out / LOCAL_SOURCE_FILE).read_text())
        card = (out / "README.md").read_text()
        ckpt = resolve_checkpoint(str(run_dir))
    except (OSError, ValueError):
        return False
    return (not missing_export_files(out) and _same_path(meta.get("checkpoint"), ckpt)
            and f'from_pretrained("{repo_id}")' in card
            and (not eval_table_md or eval_table_md.strip() in card))


def _export_of_run(out_dir: Path, run_dir: str | Path) -> bool:
    """Whether `out_dir` holds an lnfree export made from `run_dir` (any checkpoint)."""
    try:
        meta = json.loads((out_dir / LOCAL_SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return _same_path(str(meta.get("source", "")).partition("@")[0], str(run_dir).partition("@")[0])


def export_warnings(export_dir: str | Path) -> list[str]:
    """Warnings recorded with an export: its LN input stds near the eps-trick limit (lnfree_metadata.json)."""
    try:
        meta = read_metadata(export_dir)
    except ValueError as e:
        return [str(e)]
    summary = (meta or {}).get("input_std")
    w = precision_warning(summary) if summary else None
    return [w] if w else []


def prepare_export(run_dir: str | Path, out_dir: str | Path, repo_id: str, *, eval_table_md: str | None = None,
                   allow_live: bool = False, overwrite: bool = False) -> bool:
    """Make `out_dir` an up-to-date export of `run_dir` for `repo_id`; True if exported now, False if the
    export already there was reused (see reusable_export).

    An older export of the same run in `out_dir` is replaced; an older lnfree export of another run
    only with `overwrite`; anything else (a run directory, a folder in or holding one, other files) is
    never replaced (PublishInputError; export.check_export_target decides).
    """
    rid = validate_repo_id(repo_id)
    out = Path(out_dir)
    if reusable_export(run_dir, out, rid, eval_table_md):
        return False
    replace = overwrite or _export_of_run(out, run_dir)
    try:
        export_model(str(run_dir), out, allow_live=allow_live, overwrite=replace, repo_name=rid,
                     eval_table_md=eval_table_md or None)
    except (ExportError, FileNotFoundError, ValueError) as e:
        raise PublishInputError(f"export failed: {e}") from None
    return True


def export_and_push(run_dir: str | Path, out_dir: str | Path, repo_id: str, *, private: bool = False,
                    token: str | None = None, endpoint: str | None = None, commit_message: str | None = None,
                    eval_table_md: str | None = None, allow_live: bool = False, overwrite: bool = False,
                    progress: Progress | None = None) -> ExportPushResult:
    """Export `run_dir` to `out_dir` (model card for `repo_id`, with the CE table `eval_table_md` if
    given) or reuse an up-to-date export already there (prepare_export), then push it (push_export).

    The repo id, endpoint and token are checked before the (slow) export.
    """
    say = progress or (lambda _msg: None)
    rid = validate_repo_id(repo_id)
    if endpoint is not None:
        _check_endpoint(endpoint)
    tok = resolve_token(token)
    say(f"exporting {run_dir} to {out_dir} (an up-to-date export there is reused)")
    exported = prepare_export(run_dir, out_dir, rid, eval_table_md=eval_table_md, allow_live=allow_live,
                              overwrite=overwrite)
    say(f"{'exported' if exported else 'reused the export'} in {out_dir}")
    push = push_export(out_dir, rid, private=private, token=tok, endpoint=endpoint, commit_message=commit_message,
                       progress=progress)
    return ExportPushResult(Path(out_dir), exported, push)


# --------------------------------------------------------------------------------------------- helpers for UIs
def finished_runs(runs_root: str | Path) -> list[Path]:
    """Run directories under `runs_root` whose status.json says "finished" (sorted by name)."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        state = (read_status(d) or {}).get("state")
        if state == "finished" and (d / "checkpoints").is_dir():
            runs.append(d)
    return runs


def split_model_card(text: str) -> tuple[str, str]:
    """(YAML front matter, Markdown body) of a model card; front matter '' when there is none."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            return text[4:end].strip("\n"), text[end + 4:].lstrip("\n")
    return "", text
