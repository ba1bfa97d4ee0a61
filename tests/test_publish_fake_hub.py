"""The fake Hub itself: it checks the token, refuses what it does not know, is bounded, stops itself."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from fake_hub import FakeHub


def _post(url: str, body: bytes, token: str | None = "t0ken") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_token_routes_and_size_limit():
    create = json.dumps({"name": "m", "organization": "alice", "visibility": "private"}).encode()
    with FakeHub(token="t0ken", max_body=1024) as hub:
        assert _post(f"{hub.endpoint}/api/repos/create", create, token="wrong")[0] == 401
        assert _post(f"{hub.endpoint}/api/repos/create", create, token=None)[0] == 401
        assert _post(f"{hub.endpoint}/api/repos/create", create) == (200, {"url": f"{hub.endpoint}/alice/m",
                                                                           "name": "alice/m", "id": "alice/m"})
        assert _post(f"{hub.endpoint}/api/repos/create", create)[0] == 409
        assert _post(f"{hub.endpoint}/api/nowhere", b"{}")[0] == 404
        assert _post(f"{hub.endpoint}/api/repos/create", b"x" * 2048)[0] == 413
        assert hub.repos["alice/m"].private is True
        assert [r.status for r in hub.requests] == [401, 401, 200, 409, 404, 413]
        assert [r.authorized for r in hub.requests] == [False, False, True, True, True, True]


def test_stops_itself_after_its_lifetime():
    hub = FakeHub(lifetime=0.3).start()
    url = f"{hub.endpoint}/api/validate-yaml"
    assert _post(url, b"{}", token="hf_fake_token")[0] == 200
    t0 = time.monotonic()
    assert hub.closed.wait(timeout=5) and time.monotonic() - t0 < 2
    with pytest.raises(urllib.error.URLError):
        _post(url, b"{}", token="hf_fake_token")
    hub.stop()  # idempotent
