"""A fake Hugging Face Hub on 127.0.0.1 for tests: just the HTTP API that `huggingface_hub` uses for
`create_repo`, `repo_info` and `upload_folder`, recording what it receives.

Endpoints (as called by huggingface_hub 1.x/2.x; see hf_api.py, _commit_api.py, lfs.py):

  POST /api/repos/create                          {"name", "organization", "visibility"|"private", "type"}
  GET  /api/models/NS/NAME[/revision/REV]         repo info ({"id", "private", "sha", "siblings"})
  POST /api/validate-yaml                         model-card metadata check (always valid here)
  POST /api/models/NS/NAME/preupload/REV          upload mode of each file: "regular" or "lfs"
  POST /api/models/NS/NAME/commit/REV             NDJSON: header line, then "file" (base64) / "lfsFile" lines
  POST /NS/NAME.git/info/lfs/objects/batch        LFS batch API: "basic" upload action per object
  PUT  /_lfs/OID                                  the upload target of an LFS object (like a presigned URL)

Files are routed as regular (base64 in the commit) unless their name ends with one of `lfs_suffixes`.
LFS-mode files are uploaded by huggingface_hub through Xet storage when `hf_xet` is installed; the Xet
CAS protocol is not emulated here, so a test that asks for LFS mode must switch Xet off
(`huggingface_hub.constants.HF_HUB_DISABLE_XET = True`) to get the plain LFS batch protocol. The
Xet token endpoint answers 501 so that a test which forgets fails fast instead of hanging.

Bounded: request bodies over `max_body` bytes are refused (413), and the server stops itself after
`lifetime` seconds even if a test never stops it. Use it as a context manager.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = r"(?P<repo>[^/]+/[^/]+?)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("GET", re.compile(rf"^/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/{REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/_lfs/(?P<oid>[0-9a-f]{64})$"), "lfs_upload"),
    ("GET", re.compile(rf"^/api/models/{REPO}/xet-write-token/(?P<rev>[^/]+)$"), "xet_token"),
]
# Endpoints reached without the Hub token (LFS uploads go to presigned storage URLs on the real Hub).
NO_AUTH = {"lfs_upload"}
ERROR_TEXT = {
    401: "Invalid credentials in Authorization header",
    403: "You don't have the rights to create a model under this namespace",
    409: "A commit has happened since. Please refresh and try again.",
    500: "Internal Error - We're working hard to fix this as soon as possible!",
    503: "Service Unavailable",
}


@dataclass
class Request:
    """One request the server received (the Authorization header is kept only as `authorized`)."""

    method: str
    path: str
    endpoint: str | None
    status: int
    authorized: bool
    body: bytes = b""


@dataclass
class Repo:
    """A repository of the fake Hub: its visibility and its files at the head of main."""

    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    commits: list[dict] = field(default_factory=list)


class FakeHub:
    """The fake Hub server. `token`: the only token it accepts (None: any, even none).

    `fail`: {endpoint name: HTTP status} answered instead of the normal reply (e.g. {"commit": 403}).
    `echo_auth_in_errors`: failing replies quote the request's Authorization header (a misbehaving
    server or proxy), to check that clients never surface it.
    """

    def __init__(self, token: str | None = "hf_fake_token", *, lfs_suffixes: tuple[str, ...] = (),
                 fail: dict[str, int] | None = None, echo_auth_in_errors: bool = False,
                 max_body: int = 64 * 1024 * 1024, lifetime: float = 60.0):
        self.token = token
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.fail = dict(fail or {})
        self.echo_auth_in_errors = echo_auth_in_errors
        self.max_body = max_body
        self.lifetime = lifetime
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.create_payloads: list[dict] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._stopped = threading.Event()
        self.closed = threading.Event()  # set once the socket is closed (no more connections accepted)

    # ------------------------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        """The base URL to pass as `endpoint=` to huggingface_hub."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeHub":
        """Serve in a daemon thread; the server stops itself after `lifetime` seconds."""
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="fake-hub")
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._stopped.is_set() or self._server is None:
            return
        self._stopped.set()
        if self._timer is not None and threading.current_thread() is not self._timer:
            self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.closed.set()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------- inspection
    def endpoints_called(self) -> list[str]:
        """The endpoint names of the requests received, in order."""
        with self.lock:
            return [r.endpoint or f"{r.method} {r.path}" for r in self.requests]

    def add_repo(self, repo_id: str, *, private: bool = False, files: dict[str, bytes] | None = None) -> Repo:
        """Create a repository as if it already existed on the Hub."""
        with self.lock:
            repo = self.repos[repo_id] = Repo(repo_id, private, dict(files or {}))
            return repo


class _Handler(BaseHTTPRequestHandler):
    """Routes a request to the FakeHub's handlers (one handler instance per connection)."""

    fake: FakeHub
    protocol_version = "HTTP/1.1"
    _record: Request | None = None  # the request being answered (its status is set on reply)

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # ------------------------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > self.fake.max_body:
                    return None
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.fake.max_body:
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: dict | None = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload if payload is not None else {}).encode()
        if self._record is not None:
            self._record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str | None = None, code: str | None = None) -> None:
        message = message or ERROR_TEXT.get(status, f"error {status}")
        if self.fake.echo_auth_in_errors:
            message += f" (received Authorization: {self.headers.get('Authorization')})"
        headers = {"X-Error-Message": message.encode("ascii", "replace").decode()}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        name, match = None, None
        for m, rx, n in ROUTES:
            if m == method and (match := rx.match(path)):
                name = n
                break
        expected = self.fake.token
        authorized = expected is None or self.headers.get("Authorization") == f"Bearer {expected}"
        body = self._read_body()
        record = self._record = Request(method, path, name, 0, authorized)
        with self.fake.lock:
            self.fake.requests.append(record)
        if body is None:
            self.close_connection = True
            return self._error(413, "request body too large for the fake Hub")
        record.body = body
        if name is None:
            return self._error(404, f"fake Hub has no route for {method} {path}")
        if name in self.fake.fail:
            return self._error(self.fake.fail[name])
        if name not in NO_AUTH and not authorized:
            return self._error(401)
        getattr(self, f"_h_{name}")(body, match)

    def _repo(self, match) -> Repo | None:
        with self.fake.lock:
            return self.fake.repos.get(match.group("repo"))

    # ------------------------------------------------------------------------------- endpoints
    def _h_create(self, body: bytes, match) -> None:
        payload = json.loads(body or b"{}")
        with self.fake.lock:
            self.fake.create_payloads.append(payload)
        repo_id = f"{payload.get('organization')}/{payload.get('name')}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.fake.endpoint}/{repo_id}"
        with self.fake.lock:
            if repo_id in self.fake.repos:
                exists = True
            else:
                exists = False
                self.fake.repos[repo_id] = Repo(repo_id, private)
        if exists:
            return self._send(409, {"error": "You already created this model repo", "url": url},
                              {"X-Error-Message": "You already created this model repo"})
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _h_repo_info(self, body: bytes, match) -> None:
        repo = self._repo(match)
        if repo is None:
            return self._error(404, "Repository not found", code="RepoNotFound")
        self._send(200, {"id": repo.repo_id, "modelId": repo.repo_id, "private": repo.private, "sha": repo.sha,
                         "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    def _h_validate_yaml(self, body: bytes, match) -> None:
        self._send(200, {"errors": [], "warnings": []})

    def _h_xet_token(self, body: bytes, match) -> None:
        self._error(501, "the fake Hub does not emulate Xet storage; set HF_HUB_DISABLE_XET for LFS-mode tests")

    def _h_preupload(self, body: bytes, match) -> None:
        repo = self._repo(match)
        if repo is None:
            return self._error(404, "Repository not found", code="RepoNotFound")
        files = json.loads(body)["files"]
        out = []
        for f in files:
            mode = "lfs" if f["path"].endswith(self.fake.lfs_suffixes) else "regular"
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        self._send(200, {"files": out, "commitOid": repo.sha})

    def _h_lfs_batch(self, body: bytes, match) -> None:
        payload = json.loads(body)
        objects = []
        for obj in payload.get("objects", []):
            href = f"{self.fake.endpoint}/_lfs/{obj['oid']}"
            objects.append({"oid": obj["oid"], "size": obj["size"], "authenticated": True,
                            "actions": {"upload": {"href": href}}})
        self._send(200, {"transfer": "basic", "objects": objects})

    def _h_lfs_upload(self, body: bytes, match) -> None:
        oid = match.group("oid")
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "LFS object does not match its sha256")
        with self.fake.lock:
            self.fake.lfs_objects[oid] = body
        self._send(200, {})

    def _h_commit(self, body: bytes, match) -> None:
        repo = self._repo(match)
        if repo is None:
            return self._error(404, "Repository not found", code="RepoNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "commit payload must start with a header line")
        files: dict[str, bytes] = {}
        for item in lines[1:]:
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                with self.fake.lock:
                    data = self.fake.lfs_objects.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    return self._error(400, f"LFS object of {value['path']} was never uploaded")
                files[value["path"]] = data
            else:
                return self._error(400, f"fake Hub does not handle commit operation {item['key']}")
        with self.fake.lock:
            sha = hashlib.sha1(repo.sha.encode() + body).hexdigest()
            repo.files.update(files)
            repo.sha = sha
            repo.commits.append({"oid": sha, "summary": lines[0]["value"].get("summary"), "files": sorted(files),
                                 "modes": {i["value"]["path"]: i["key"] for i in lines[1:]}})
        self._send(200, {"commitUrl": f"{self.fake.endpoint}/{repo.repo_id}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None})


# ------------------------------------------------------------------------------------------- test helpers
def make_export_dir(path, card: str = "---\nlibrary_name: transformers\n---\n# tiny\n"):
    """A minimal publishable folder: a tiny GPT-2 (`save_pretrained`) plus a README.md model card."""
    from _tiny import tiny_model  # torch: imported only by the tests that build a model

    out = Path(path)
    tiny_model().save_pretrained(str(out))
    (out / "README.md").write_text(card)
    return out


_TRAINED: dict[str, Path] = {}


def tiny_finished_run(tmp_path_factory) -> Path:
    """A finished run (RUNS_ROOT/tiny) of a tiny GPT-2 trained with the auto schedule until every
    LayerNorm is removed; trained once per test session (the tests only read it)."""
    if "run" in _TRAINED:
        return _TRAINED["run"]
    import numpy as np
    from _tiny import tiny_model

    from lnfree_core.config import TrainConfig
    from lnfree_core.train import train

    base = tmp_path_factory.mktemp("publish_run")
    tiny_model().save_pretrained(str(base / "model"))
    rng = np.random.default_rng(0)
    with open(base / "tokens.jsonl", "w") as fh:
        for _ in range(64):
            fh.write(json.dumps({"input_ids": [int(x) for x in rng.integers(0, 127, 64)]}) + "\n")
    run = base / "runs" / "tiny"
    hp = dict(max_steps=12, micro_batch_size=2, grad_accum_steps=1, seq_len=32, warmup_steps=1, lr=3e-3, min_lr=1e-3)
    res = train(TrainConfig(model=str(base / "model"), dataset=str(base / "tokens.jsonl"), schedule="auto",
                            out=str(run), overrides=hp, save_every=100))
    assert res.state == "finished", res
    _TRAINED["run"] = run
    return run


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    """{relative path: (bytes, mtime_ns)} of every file under `folder`, to show it was not changed."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def files_containing(root, needle: str) -> list[str]:
    """Paths of the files under `root` whose bytes contain `needle`."""
    data = needle.encode()
    return [str(p) for p in Path(root).rglob("*") if p.is_file() and data in p.read_bytes()]


TOKEN = "hf_TestTokenDoNotLeak0123456789abcdef"  # the fake Hub's token in the publish tests


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """No ambient token, offline mode or proxy; huggingface_hub's token file points into tmp_path (the
    fixture's value: it must never be created) and it fetches nothing from huggingface.co."""
    import huggingface_hub.constants
    from huggingface_hub.utils import _detect_agent

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HTTP_PROXY", "http_proxy",
                "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub fetches an "agent harness" list from huggingface.co for its user agent: not in tests
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    token_path = tmp_path / "hf_home" / "token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(token_path))
    return token_path
