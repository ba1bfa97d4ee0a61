"""Is the Hugging Face Hub usable right now? One fast, cached answer for the whole project.

Nothing in lnfree may wait on the network for long: :func:`hub_reachable` honours the
``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` environment variables (read at call time, so a test
or a user can flip them in a running process) and otherwise probes the Hub endpoint once per
process with a hard wall-clock timeout (DNS included, by running the probe in a daemon thread).
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

from huggingface_hub import constants

_TRUE = {"1", "true", "yes", "on"}
_probe_cache: dict[str, bool] = {}
_probe_lock = threading.Lock()

DEMO_HINT = "python -m lnfree_core demo build"


class HubUnavailableError(RuntimeError):
    """Raised, without waiting, when something needs the Hub and the Hub cannot be used."""


def offline_env() -> bool:
    """True if offline mode is asked for: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE in the environment now,
    or ``huggingface_hub.constants.HF_HUB_OFFLINE`` (set when huggingface_hub was imported)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hub endpoint in use (``HF_ENDPOINT``, else huggingface_hub's default)."""
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def _probe(url: str, timeout: float) -> bool:
    """One small GET; the Hub counts as reachable if it answers like the Hub (2xx/3xx, 401 or 404).

    403/407/5xx are what a blocking proxy or an outage return, so they count as unreachable.
    """
    result = [False]

    def target() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url), timeout=timeout) as resp:
                resp.read(1)
                result[0] = True
        except urllib.error.HTTPError as err:
            result[0] = err.code in (401, 404)
        except Exception:  # DNS failure, refused, timeout, TLS, proxy: all mean "unreachable"
            result[0] = False

    thread = threading.Thread(target=target, name="lnfree-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if not thread.is_alive() else False


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hub can be used: False at once in offline mode, else a cached probe (<= timeout s)."""
    if offline_env():
        return False
    endpoint = hub_endpoint()
    with _probe_lock:
        if endpoint not in _probe_cache:
            _probe_cache[endpoint] = _probe(endpoint + "/api/models/gpt2", timeout)
        return _probe_cache[endpoint]


def reset_hub_cache() -> None:
    """Forget the cached probe result (e.g. after the network came up)."""
    with _probe_lock:
        _probe_cache.clear()


def resolve_offline(offline: bool | None) -> bool:
    """Turn the ``offline`` argument used across lnfree into a decision.

    ``True``/``False`` are taken as given (``False`` skips the probe); ``None`` means offline if the
    environment says so or the Hub does not answer within the probe timeout.
    """
    if offline is not None:
        return bool(offline)
    return not hub_reachable()


def hub_unavailable_message(what: str) -> str:
    """The message shown when ``what`` (e.g. "dataset 'owt' (apollo-research/...)") needs the Hub."""
    reason = "HF_HUB_OFFLINE is set" if offline_env() else "the Hub is not reachable from this machine"
    return (
        f"{what} lives on the Hugging Face Hub, but {reason}. Either set up network access to "
        f"{hub_endpoint()} (and unset HF_HUB_OFFLINE), pass a local path instead (a parquet/jsonl/txt "
        f"file or a folder of them, or a datasets.save_to_disk folder), or build the offline demo "
        f"suite with `{DEMO_HINT}`."
    )
