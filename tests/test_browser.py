"""`mlflow ui` and optuna-dashboard in headless Chromium, opened from their home pages as a user would.

Each test fills a store in a temporary directory through the suite's own code, serves it on a free
local port (127.0.0.1), starts Chromium with a fresh profile and drives it over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: standard library only, no browser download, no
WebDriver), clicks through the pages with the mouse and checks what they show. Screenshots of the
pages checked are written to tmp_path, or to $SCREENSHOTS_DIR when it is set.

Chromium is the Debian `chromium` package (`.ci/run` installs it in CI); $CHROMIUM may name another
binary. Without one the tests are skipped, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from reproduce import runner, tracking
from reproduce.experiments import plan

from .conftest import TINY

BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() == "true"
NO_CHROMIUM = "no Chromium binary (apt-get install chromium, or set CHROMIUM=/path)"


def chromium_binary() -> str | None:
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_binary() is None and not IN_CI, reason=NO_CHROMIUM)]


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("CI=true but no Chromium binary found: .ci/run installs the Debian "
                        "`chromium` package (or set CHROMIUM to a binary)")
        pytest.skip(NO_CHROMIUM)
    return binary


@pytest.fixture
def shots(tmp_path) -> Path:
    where = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


# ------------------------------------------------------------------- Chromium over a pipe

TO_FDS_3_AND_4 = """
import os, sys
fds = [os.dup(int(fd)) for fd in sys.argv[1:3]]       # copies first: 3 or 4 may be one of them
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(fds[0], 3)
os.dup2(fds[1], 4)
for fd in fds:
    if fd not in (3, 4):
        os.close(fd)
os.set_inheritable(3, True)                           # dup2 onto itself keeps close-on-exec
os.set_inheritable(4, True)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Browser:
    """Headless Chromium with a fresh profile, driven over the DevTools protocol on fds 3/4."""

    def __init__(self, binary: str, width: int = 1400, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        child_in, self._out = os.pipe()             # we write commands, Chromium reads fd 3
        self._in, child_out = os.pipe()             # Chromium writes replies on fd 4
        args = [binary, "--headless=new", "--remote-debugging-pipe", "--no-first-run",
                "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-dev-shm-usage", "--disable-background-networking",
                "--hide-scrollbars", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")          # Chromium refuses to run as root otherwise
        self.log = Path(self.profile) / "chromium.log"
        with open(self.log, "wb") as log:
            # a small Python step puts the pipe ends on fds 3 and 4, then becomes Chromium
            self.proc = subprocess.Popen(
                [sys.executable, "-c", TO_FDS_3_AND_4, str(child_in), str(child_out), *args],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        os.close(child_in)
        os.close(child_out)
        self._buf, self._id = b"", 0
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
            self.page("Page.enable")
            self.page("Runtime.enable")
            self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:     # anything else is an event: not needed
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} in {timeout}s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.log.read_text(errors='replace')[-2000:]}")
            self._buf += chunk

    def page(self, method: str, **params):
        return self.call(method, session=self.session, **params)

    def js(self, expression: str):
        r = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"].get("exception", {}).get("description")
                               or r["exceptionDetails"])
        return r["result"].get("value")

    def goto(self, url: str) -> None:
        self.page("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float = 60):
        """The first truthy value of a JS expression, polled (pages render after loading)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.js(expression)
            except RuntimeError:                    # the page is being replaced
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                text = (self.js("document.body ? document.body.innerText : ''") or "")[:1500]
                raise AssertionError(f"{what}: not seen in {timeout}s at {self.url}; the page "
                                     f"shows:\n{text}")
            time.sleep(0.25)

    def click(self, selector: str, text: str, exact: bool = True, timeout: float = 60) -> None:
        """Click with the mouse, as a user does, the visible element matching selector and text."""
        match = "t === want" if exact else "t.includes(want)"
        x, y = self.wait_for(f"""(() => {{
            const want = {json.dumps(text)};
            for (const e of document.querySelectorAll({json.dumps(selector)})) {{
                const t = ((e.innerText || '') + ' ' + (e.getAttribute('aria-label') || '')).trim();
                if (!({match})) continue;
                e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect();
                if (r.width && r.height) return [r.x + r.width / 2, r.y + r.height / 2];
            }}
            return null; }})()""", f"{selector} {text!r} to click", timeout)
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    @property
    def url(self) -> str:
        return self.js("location.href")

    def screenshot(self, path: Path, whole_page: bool = False) -> Path:
        """The window, or the whole page as far as it scrolls (at most 4000 px), as PNG."""
        width, height = self.js("window.scrollTo(0, 0); [innerWidth, Math.max(innerHeight, "
                                "document.documentElement.scrollHeight)]")
        if not whole_page:
            height = self.js("innerHeight")
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, 4000), "scale": 1}
        data = self.page("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.call("Browser.close", timeout=5)
                except Exception:  # noqa: BLE001 - killed below
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        finally:
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(chromium):
    b = Browser(chromium)
    yield b
    b.close()


@pytest.fixture
def wide_browser(chromium):
    """A window wide enough for every column of the suite's runs view beside MLflow's assistant
    panel (the runs table draws only the columns in sight)."""
    b = Browser(chromium, width=2200, height=900)
    yield b
    b.close()


# --------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(args: list[str], url: str, log: Path, env: dict | None = None, cwd: Path | None = None,
          timeout: float = 180):
    """Run a server in its own process group until the block ends; wait until `url` answers."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else \
                    f"did not answer {url} in {timeout}s"
                pytest.fail(f"{' '.join(args)} {state}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)     # the server and its workers
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ------------------------------------------------------------------------- mlflow ui

EXPERIMENT = "figure-4"                             # three runs: grow, prune, dense


@pytest.fixture(scope="module")
def mlflow_store(chromium, tmp_path_factory):
    """A store with the suite's experiment and three runs of figure 4 (trained by fake_train)."""
    from .test_figures import fake_train

    where = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{where}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DATA_DIR", str(where / "data"))
        mp.setenv("FIGURES_DIR", str(where / "figures"))
        for method in runner.TRAINERS:
            mp.setitem(runner.TRAINERS, method, fake_train)
        runner.run_experiment(EXPERIMENT, "smoke", overrides=TINY, progress=False)
    c = tracking.client(uri)
    exp_id = tracking.experiment_id(c, "smoke", create=False)
    names = sorted(runner.run_name_of(pr) for pr in plan(EXPERIMENT, "smoke", TINY))
    assert sorted(r.info.run_name for r in c.search_runs([exp_id])) == names
    return where, uri, exp_id, names


@pytest.fixture(scope="module")
def mlflow_ui(mlflow_store):
    """`make mlflow-ui` on the test store (the suite's MLflow app, one worker, no job runner):
    its base URL."""
    where, uri, _, _ = mlflow_store
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "reproduce", "mlflow-ui", "--port", str(port), "--workers", "1"]
    with serve(args, f"{base}/health", where / "mlflow-ui.log", cwd=tracking.REPO_ROOT,
               env={"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(tracking.REPO_ROOT)}):
        yield base


def open_experiment_from_home(browser: Browser, base: str, name: str) -> None:
    browser.goto(f"{base}/")
    browser.click("a", name)                        # the experiment in the home page's list


# what shows once an experiment page has rendered: its runs table or the GenAI overview
PAGE_STATE = """(() => {
    const hash = location.hash;
    if (hash.includes('/overview')) return {page: 'overview', hash: hash};
    if (hash.includes('/runs') && document.querySelector('[role=grid] [role=gridcell]'))
        return {page: 'runs', hash: hash};
    return null; })()"""


def assert_runs_table(browser: Browser, exp_id: str, names: list[str]) -> dict:
    state = browser.wait_for(PAGE_STATE, "the experiment's runs table or its GenAI overview")
    assert state["page"] == "runs", (
        f"the experiment opened on MLflow's GenAI overview ({browser.url}), not on its runs table")
    assert re.match(rf"#/experiments/{exp_id}/runs(\?|$)", state["hash"]), state["hash"]
    # every run shows by its name, a link to the run, in the Run Name column
    shown = browser.wait_for(f"""(() => {{
        const want = {json.dumps(names)};
        const shown = [...document.querySelectorAll(
            '[role=grid] [role=gridcell][col-id*="Run Name"] a')].map(a => a.innerText.trim());
        return want.every(n => shown.includes(n)) ? shown : null; }})()""",
                             f"the run names {names} in the runs table's Run Name column")
    assert sorted(shown) == names
    headers = browser.wait_for(f"""(() => {{
        const shown = [...document.querySelectorAll('[role=grid] [role=columnheader]')]
            .map(h => h.innerText.trim());
        return {json.dumps(CURATED)}.every(c => shown.includes(c)) ? shown : null; }})()""",
                               f"the suite's columns {CURATED} in the runs table")
    assert "Run Name" in headers
    return state


# the suite's view (reproduce.runs_view): these columns head the runs table
CURATED = ["variant", "seed", "val/acc", "budget/usage", "cost/macs", "channels/stage1"]


# MLflow 3.17's UI ignores the experiment tag mlflow.experimentKind: the sidebar's GenAI / Model
# training switch (?workflowType= in the URL, else localStorage 'mlflow.workflowType_v1', else
# 'genai') decides, and a new browser would open the experiment on its GenAI overview. The suite's
# MLflow app (reproduce.mlflow_app) sets the switch to model training in a browser that has none.
def test_mlflow_ui_opens_an_experiment_from_the_home_page_on_its_runs_table(
        mlflow_store, mlflow_ui, wide_browser, shots):
    _, _, exp_id, names = mlflow_store
    browser = wide_browser
    open_experiment_from_home(browser, mlflow_ui, tracking.experiment_name("smoke"))
    try:
        assert_runs_table(browser, exp_id, names)
    finally:
        try:                                        # let what shows finish loading, for the picture
            browser.wait_for("document.body.innerText.includes('No data available') || "
                             "!!document.querySelector('[role=grid] [role=gridcell] a')",
                             "a loaded page", timeout=10)
        except AssertionError:
            pass
        browser.screenshot(shots / "mlflow-home-to-experiment.png")
    # a run opened from the table is a training run (its metrics), not an "Evaluation run"
    browser.click("[role=grid] [role=gridcell] a", names[0])
    assert_training_run(browser)
    browser.screenshot(shots / "mlflow-home-to-run.png")


def assert_training_run(browser: Browser) -> None:
    text = browser.wait_for("location.hash.includes('/runs/') && "
                            "document.body.innerText.includes('Model metrics') && "
                            "document.body.innerText", "the run's page as a training run")
    assert "Evaluation run" not in text


def test_mlflow_ui_printed_links_open_the_suite_view_and_training_runs(
        mlflow_store, mlflow_ui, wide_browser, shots):
    _, uri, exp_id, names = mlflow_store
    browser = wide_browser
    # the link `make mlflow-ui` and `reproduce links` print: the suite's view of the runs table
    browser.goto(tracking.runs_table_url(exp_id, mlflow_ui))
    assert_runs_table(browser, exp_id, names)
    browser.screenshot(shots / "mlflow-runs-table-link.png")
    # its chart view: the suite's section of charts
    browser.click("label:has(input[value=CHART])", "", exact=False)   # the "Chart view" switch
    # the suite's section first (the UI's generated ones, one per metric prefix, after it)
    browser.wait_for(r"""(() => {
        const t = document.body.innerText, ours = t.search(/Reproduction\s*\(5\)/),
              generated = t.search(/blocks\s*\(\d+\)/);
        return ours >= 0 && t.includes('channels/stage1 vs channels/stage2')
            && (generated < 0 || ours < generated);
        })()""", "the suite's chart section, first")
    browser.screenshot(shots / "mlflow-runs-charts-link.png")

    # a run's printed link opens it as a training run
    run = tracking.client(uri).search_runs([exp_id], filter_string="tags.variant = 'grow'")[0]
    browser.goto(tracking.run_url(exp_id, run.info.run_id, mlflow_ui))
    assert_training_run(browser)


# -------------------------------------------------------------------- optuna-dashboard

def constrained_study(tmp_path):
    """A study of the search test spec (constraint budget/usage <= 0.9) with three trials scored
    by the suite's objective without training; trial 0 is the most accurate but infeasible."""
    from reproduce import search
    from reproduce.search.objective import TrialObjective, suggest
    from reproduce.search.study import record_best

    from .test_search import write_spec

    spec = search.load_spec(str(write_spec(tmp_path, TINY)), "smoke")
    study, _ = search.open_study(spec, search.make_storage(search.storage_url(), spec.heartbeat))
    objective = TrialObjective(spec, None, "0", "parent", search.storage_url())
    for acc, usage in [(95.0, 0.95), (80.0, 0.5), (70.0, 0.4)]:
        trial = study.ask()
        suggest(trial, spec.space)
        values, _ = objective._score(trial, {"val/acc": acc, "budget/usage": usage})
        study.tell(trial, values[0])
    record_best(study, spec)
    assert study.best_trial.number == 1 and study.user_attrs["best_feasible_trials"] == [1]
    return study


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_optuna_dashboard_study_page_shows_the_best_trial_under_the_constraint(
        tmp_path, browser, shots):
    from reproduce import search

    study = constrained_study(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # `make optuna-dashboard`: the suite's dashboard
    args = [sys.executable, "-m", "reproduce", "optuna-dashboard", "--storage",
            search.storage_url(), "--port", str(port)]
    with serve(args, f"{base}/api/studies", tmp_path / "optuna-dashboard.log",
               cwd=tracking.REPO_ROOT, env={"PYTHONPATH": str(tracking.REPO_ROOT)}):
        browser.goto(f"{base}/")
        browser.click("a", study.study_name, exact=False)     # the study in the home page's list
        browser.wait_for("location.pathname.startsWith('/dashboard/studies/')", "the study page")
        best = browser.wait_for(r"""(() => {
            const m = document.body.innerText.match(/Best Trial \(number=(\d+)\)/);
            return m ? m[1] : null; })()""", "the study page's Best Trial card")
        # optuna-dashboard alone names the unconstrained best (#0, infeasible); the suite's
        # dashboard names Optuna's choice under the constraint (#1), as the study's note does
        assert int(best) == 1
        browser.screenshot(shots / "optuna-study-landing.png")
        browser.click("button", "next page")                  # study user attributes, rows 6-10
        attrs = browser.wait_for("""(() => {
            const rows = [...document.querySelectorAll('tr')].map(r => r.innerText.split('\\t')
                .map(s => s.trim()));
            const kept = Object.fromEntries(rows.filter(r => r.length === 2));
            return 'best_feasible_trials' in kept ? kept : null; })()""",
                                 "the study attribute best_feasible_trials")
        assert json.loads(attrs["best_feasible_trials"]) == [1]
        assert json.loads(attrs["constraints"]) == ["budget/usage <= 0.9"]
        browser.screenshot(shots / "optuna-study.png", whole_page=True)

        browser.click("a[href*='trials?numbers=']", "", exact=False)   # the card's DETAILS
        marked = study.trials[int(best)]
        text = browser.wait_for(f"document.body.innerText.includes('Trial {best} (trial_id=') && "
                                "document.body.innerText", f"trial {best}'s page")
        assert f"feasible {marked.user_attrs['feasible']}" in text
        browser.screenshot(shots / "optuna-best-trial.png")

        browser.click("a", "Note")                            # the study's note tab
        note = browser.wait_for("location.pathname.endsWith('/note') && "
                                "document.body.innerText.includes('Constraints') && "
                                "document.body.innerText", "the study note")
        assert "budget/usage <= 0.9" in note
        assert re.search(r"Best feasible trial .*: #1\b", note), note
        browser.screenshot(shots / "optuna-study-note.png")


# ------------------------------------------------------------------------- make report

def test_report_renders_every_image_and_links_each_row_to_its_run(mlflow_store, browser, shots):
    """`make report`: one self-contained page (no fetch outside it) whose every image loads,
    the paper's number beside ours with the difference and the table's noise verdict, each
    row linked to its MLflow run; and a PDF beside it."""
    from reproduce import report
    from reproduce.pipeline import make
    from reproduce.store import Store

    where, uri, exp_id, _ = mlflow_store
    folder = where / "report-figures"
    make("figure-4", "smoke", run_missing=False, overrides=TINY, out_dir=folder, progress=False,
         uri=uri)
    # a table as analysis writes it (markdown, CSV with paper and noise columns, sidecar)
    side = json.loads((folder / "figure-4.runs.json").read_text())
    ids = [r["run_id"] for r in side["runs"]]
    (folder / "table-demo.md").write_text(
        "# Table: demo\n\n- Profile `smoke`.\n\n| model | top-1 (%) | paper top-1 (%) | runs |\n"
        "|---|---|---|---|\n| resnet20 | 91.00 ± 0.50 | 91.9 | [1] |\n\nRuns (MLflow run ids):\n\n"
        f"- [1] resnet20 / grow: {ids[0]}\n")
    pd = pytest.importorskip("pandas")
    pd.DataFrame([{"model": "resnet20", "variant": "grow", "top1_mean": 91.0, "top1_std": 0.5,
                   "paper_top1": 91.9, "paper_source": "paper", "reference": "dense",
                   "beyond_noise": "yes", "run_ids": ids[0]}]).to_csv(folder / "table-demo.csv",
                                                                       index=False)
    (folder / "table-demo.runs.json").write_text(json.dumps(
        {"output": "table-demo", "profile": "smoke", "experiments": ["figure-4"],
         "runs": side["runs"][:1], "drawn_at": "now"}))

    page, pdf = report.write("smoke", folder, Store(uri))
    text = page.read_text()
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//(?!127\.0\.0\.1)""", text)
    assert "<link" not in text and "<script" not in text          # nothing fetched, nothing run
    assert tracking.run_url(exp_id, ids[0]).replace("&", "&amp;") in text

    browser.goto(page.as_uri())
    n = browser.wait_for("document.readyState === 'complete' && "
                         "[...document.images].every(i => i.complete) && document.images.length",
                         "the report's images loaded")
    assert n == len(list(folder.glob("figure-*.png")))
    widths = browser.js("[...document.images].map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), widths
    row = browser.js("""[...document.querySelectorAll('tr')].map(r => r.innerText)
                        .find(t => t.includes('91.9') && t.includes('n/a') === false
                              && t.includes('top1'))""")
    assert row and "-0.9" in row and "yes vs dense" in row, row
    env = browser.js("document.querySelector('table.env').innerText")
    for key in ("device", "torch", "mlflow", "optuna", "CPU-hours", "profile", "commit"):
        assert key in env, key
    browser.screenshot(shots / "report.png", whole_page=True)
