"""hub_reachable: honours offline mode, never waits long, tells the Hub from a blocking proxy."""

import http.server
import socket
import threading
import time

import huggingface_hub.constants
import pytest

from lnfree_core.data import hub


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # the probes below talk to 127.0.0.1 directly
    hub.reset_hub_cache()
    yield monkeypatch
    hub.reset_hub_cache()


def test_offline_env_answers_without_probing(monkeypatch):
    def no_probe(*a, **k):
        raise AssertionError("must not probe the network in offline mode")

    monkeypatch.setattr(hub, "_probe", no_probe)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False
    assert hub.resolve_offline(None) is True
    assert hub.resolve_offline(False) is False
    assert "HF_HUB_OFFLINE is set" in hub.hub_unavailable_message("x")


def test_silent_endpoint_times_out_and_is_cached(online):
    srv = socket.socket()  # accepts connections (backlog) but never answers
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
    calls = []
    real = hub._probe
    online.setattr(hub, "_probe", lambda url, timeout: calls.append(url) or real(url, timeout))
    try:
        t0 = time.monotonic()
        assert hub.hub_reachable(timeout=0.5) is False
        assert time.monotonic() - t0 < 2
        assert hub.hub_reachable(timeout=0.5) is False
        assert len(calls) == 1
        assert "not reachable" in hub.hub_unavailable_message("x")
    finally:
        srv.close()


@pytest.mark.parametrize("status,reachable", [(200, True), (401, True), (404, True), (403, False), (502, False)])
def test_http_status_classification(online, status, reachable):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert hub.hub_reachable(timeout=2.0) is reachable
    finally:
        server.shutdown()
        server.server_close()
