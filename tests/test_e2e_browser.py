"""The app in a real browser: `streamlit run app.py` in a subprocess, every registered page opened by
its URL path in headless Chromium (Selenium), no exception shown on any page, screenshots saved.

The server runs in a temporary folder, so its runs root (./runs), analysis cache (./lnfree_cache) and
demo root (./lnfree_home/demo) are its own, and the Hub is off (HF_HUB_OFFLINE=1). What it shows:

* by default, a tiny vanilla / LN-free pair trained with the real trainer from a tiny "original"
  GPT-2 folder, and a small token file: the Train page watches the LN-free run (?run=), the analysis
  pages compare the pair with its base model (?runs=...&dataset=...);
* when a demo suite is built at ./lnfree_home/demo of the folder pytest runs in (what `python -m
  lnfree_core demo build` makes there, and where an app started there finds it), it is linked into
  the server's folder instead: the analysis pages open on their defaults (the demo models and
  datasets) and the Train page watches the demo's LN-removal run next to its vanilla control.

Screenshots go to the test's temporary folder and, when LNFREE_SCREENSHOTS_DIR is set, there too (how
docs/screenshots is refreshed: `LNFREE_SCREENSHOTS_DIR=docs/screenshots pytest -m browser
tests/test_e2e_browser.py`).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH = 1400


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return (f"{path} is missing: install Chromium and its driver to run the browser tests "
                    "(apt-get install -y chromium chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)


def registered_pages() -> list[str]:
    """The page files of app.py's PAGES that exist (app.py registers only those), in order."""
    tree = ast.parse((REPO / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "PAGES":
            files = [elt.elts[1].value for elt in node.value.elts]
            return [f for f in files if (REPO / f).is_file()]
    raise AssertionError("app.py has no PAGES list")


def load_compare_tests():
    spec = importlib.util.spec_from_file_location("test_app_compare_pages",
                                                  Path(__file__).with_name("test_app_compare_pages.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_source() -> Path | None:
    """./lnfree_home/demo when a whole demo suite (three models, three datasets, the runs) is built there."""
    from pages._common.ui_data.demo_suite import demo_catalog

    root = (Path.cwd() / "lnfree_home" / "demo").resolve()
    cat = demo_catalog(root)
    whole = len(cat["models"]) == 3 and len(cat["datasets"]) == 3 and (root / "runs" / "ln-free").is_dir()
    return root if whole else None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The server's working folder and what it holds: {'mode': 'demo' | 'tiny', ...paths}."""
    base = tmp_path_factory.mktemp("e2e")
    demo = demo_source()
    if demo is not None:
        (base / "lnfree_home").mkdir()
        (base / "lnfree_home" / "demo").symlink_to(demo, target_is_directory=True)
        (base / "runs").mkdir()
        for mode, name in (("ln-free", "demo-lnfree"), ("vanilla", "demo-vanilla")):
            (base / "runs" / name).symlink_to(demo / "runs" / mode, target_is_directory=True)
        return base, {"mode": "demo"}
    suite = load_compare_tests().build_suite(base, train=True)
    return base, {"mode": "tiny", **suite}


@contextlib.contextmanager
def streamlit_server(base: Path):
    """`streamlit run app.py` started in `base` as a user starts it: with the repository's
    .streamlit/config.toml (Streamlit reads it from the folder it starts in). Yields (url, Popen, log file)."""
    (base / ".streamlit").mkdir(exist_ok=True)
    shutil.copy(REPO / ".streamlit" / "config.toml", base / ".streamlit" / "config.toml")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log_path = base / f"streamlit-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError("streamlit did not answer /_stcore/health within 60 s")
            time.sleep(0.3)
        yield url, proc, log_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def server(workdir):
    base, _ = workdir
    with streamlit_server(base) as (url, _proc, _log):
        yield url


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--window-size={WIDTH},1000", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def page_url(base_url: str, page: str, first: bool, suite: dict) -> str:
    """A page's URL path (its file name; '/' for the default page) with the query it is opened with."""
    stem = Path(page).stem
    path = "/" if first else f"/{stem}"
    query: list[tuple[str, str]] = []
    demo = suite["mode"] == "demo"
    if stem == "train":
        query = [("run", "demo-lnfree" if demo else "tiny-lnfree")]
    elif stem in ("compare", "outliers", "first_tokens", "confidence", "dla") and not demo:
        query = [("runs", "tiny-vanilla"), ("runs", "tiny-lnfree"), ("dataset", str(suite["data"]))]
    return base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")


def wait_rendered(drv, timeout: float = 90) -> None:
    """Until the page has an h1 and its script has stopped (stApp's data-test-script-state is
    notRunning for a whole second: a page may rerun itself once)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(drv, timeout, poll_frequency=0.25)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1"))
    quiet_since: list[float | None] = [None]

    def settled(d) -> bool:
        app = d.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
        state = app[0].get_attribute("data-test-script-state") if app else None
        if state != "notRunning":
            quiet_since[0] = None
            return False
        quiet_since[0] = quiet_since[0] or time.time()
        return time.time() - quiet_since[0] > 1.0

    wait.until(settled)


def screenshot(drv, path: Path) -> None:
    """The whole page (the window is grown to the content's height, up to 4000 px)."""
    height = drv.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "return Math.max(m.scrollHeight, document.body.scrollHeight);")
    drv.set_window_size(WIDTH, max(800, min(4000, int(height) + 40)))
    time.sleep(0.8)  # charts re-layout to the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(path))
    drv.set_window_size(WIDTH, 1000)


def compact_copy(src: Path, dst: Path) -> None:
    """A 256-colour copy of a screenshot (about a third of the size; text and charts stay sharp)."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                   dither=Image.Dither.NONE).save(dst, optimize=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def page_problems(drv, page: str) -> list[str]:
    from selenium.webdriver.common.by import By

    problems = []
    exceptions = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    if exceptions:
        problems.append(f"{page}: exception on the page: {exceptions[0].text[:400]}")
    errors = [e.text for e in drv.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')]
    if Path(page).stem != "outliers" and errors:  # Outliers flags its high-loss tokens with an error box
        problems.append(f"{page}: error message: {errors[0][:400]}")
    if not drv.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]'):
        problems.append(f"{page}: no chart drawn")
    if not drv.find_elements(By.CSS_SELECTOR, 'input[aria-label="Runs root"]'):
        problems.append(f"{page}: no Runs-root field in the sidebar (the page ran outside app.py)")
    return problems


def test_fresh_server_two_analysis_pages_at_once_then_idle(workdir, driver):
    """What a newcomer does first: the server just started, the analysis cache is empty, and two
    analysis pages (three models each) are opened at once by deep links, the first URL the server sees
    being a page's, not '/'. Every model must load in both (loads in threads used to race inside
    transformers and poison the process), both pages must run inside app.py's navigation, and then,
    with a tab open and nothing to do, the server must not burn a core (file watching of .venv, runs
    and caches did: 97% of a core).

    test_every_page_renders_in_a_browser did not catch these: it opens '/' first, then one page at a
    time, so no two model loads ever overlap, and its server reads no .streamlit/config.toml."""
    base, suite = workdir
    shutil.rmtree(base / "lnfree_cache", ignore_errors=True)
    with streamlit_server(base) as (url, proc, log_path):
        first, second = "pages/compare.py", "pages/outliers.py"
        driver.get(page_url(url, first, False, suite))
        tab_one = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(page_url(url, second, False, suite))
        tab_two = driver.current_window_handle
        problems = []
        for handle, page in ((tab_two, second), (tab_one, first)):
            driver.switch_to.window(handle)
            wait_rendered(driver, timeout=600)
            problems += page_problems(driver, page)
        log = log_path.read_text(errors="replace")
        assert not problems, "\n".join(problems) + "\n--- server log ---\n" + log[-3000:]
        driver.switch_to.window(tab_two)
        driver.close()
        driver.switch_to.window(tab_one)
        time.sleep(3)
        t0, c0 = time.time(), cpu_seconds(proc.pid)
        time.sleep(20)
        idle = (cpu_seconds(proc.pid) - c0) / (time.time() - t0)
        print(f"idle server with a tab open on {first}: {100 * idle:.1f}% of a core")
        assert idle < 0.25, f"the idle server used {100 * idle:.0f}% of a core with one tab open"
        assert "Inotify queue overflowed" not in log_path.read_text(errors="replace")


def test_every_page_renders_in_a_browser(server, driver, workdir, tmp_path):
    from selenium.webdriver.common.by import By

    _, suite = workdir
    pages = registered_pages()
    assert {"pages/home.py", "pages/compare.py", "pages/outliers.py"} <= set(pages)
    out_dirs = [tmp_path / "screenshots"]
    if os.environ.get("LNFREE_SCREENSHOTS_DIR"):
        out_dirs.append(Path(os.environ["LNFREE_SCREENSHOTS_DIR"]).resolve())
    problems = []
    for i, page in enumerate(pages):
        t0 = time.time()
        driver.get(page_url(server, page, i == 0, suite))
        wait_rendered(driver)
        print(f"{page}: rendered in {time.time() - t0:.1f} s")
        stem = Path(page).stem
        exceptions = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        if exceptions:
            problems.append(f"{page}: exception on the page: {exceptions[0].text[:400]}")
        if stem in ("compare", "outliers", "first_tokens", "confidence", "dla"):
            errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')]
            charts = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
            if stem != "outliers" and errors:  # Outliers flags its high-loss tokens with an error box
                problems.append(f"{page}: error message: {errors[0][:400]}")
            if not charts:
                problems.append(f"{page}: no chart drawn")
        shot = tmp_path / "screenshots" / f"{stem}.png"
        screenshot(driver, shot)
        for d in out_dirs[1:]:
            compact_copy(shot, d / shot.name)
    assert not problems, "\n".join(problems)
    for page in pages:
        assert (tmp_path / "screenshots" / f"{Path(page).stem}.png").stat().st_size > 10_000
