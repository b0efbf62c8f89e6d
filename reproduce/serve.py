"""`make mlflow-ui` and `make optuna-dashboard`: start the UI on a free port, wait until it
answers, then print where to look.

- A port another program holds stops here with a message and exit code 2 before anything starts
  (on macOS the AirPlay Receiver holds 5000); a server that exits while starting stops here
  with its exit code. The links are printed only once the server answers them.
- A store that does not exist yet is not created (MLflow and Optuna would create an empty one):
  the message says which command fills it.
- The MLflow UI is `mlflow server --app-name reproduce` (`reproduce.mlflow_app`, registered as
  an `mlflow.app` entry point by `pip install -e .`, which `make setup` runs). Where the installed
  package metadata predates the entry point, the server gets a minimal distribution that declares
  it, so the same app is served.
- The dashboard is `reproduce.dashboard` (optuna-dashboard's app, with Optuna's constrained best
  trial), served here by a threaded WSGI server, as `optuna-dashboard` serves it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from . import tracking
from .errors import ConfigError

READY_TIMEOUT = 180.0            # MLflow's first start (database migrations) on a busy machine


class ServeError(ConfigError):
    """The UI cannot be started; the message says why and what to do."""


# --------------------------------------------------------------------------------- ports

def port_in_use(host: str, port: int) -> bool:
    """Something accepts connections on host:port, or the address cannot be bound (as the
    server would bind it: with SO_REUSEADDR, so a port just released is not taken for busy)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        pass
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_port(host: str, port: int, what: str, variable: str) -> None:
    if not port_in_use(host, port):
        return
    mac = (" (on macOS, the AirPlay Receiver holds port 5000: turn it off in System Settings, or "
           "choose another port)" if port == 5000 else "")
    raise ServeError(f"cannot start {what}: port {port} on {host} is already in use by another "
                     f"program{mac}. Choose a free port, e.g. make {what} {variable}={port + 1}")


def _answers(url: str) -> str | None:
    """The body of a 200 answer from url, or None."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode(errors="replace") if r.status == 200 else None
    except OSError:
        return None


def _sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]).resolve() if url.startswith("sqlite:///") else None


def missing_store(url: str, what: str, variable: str, fill: str) -> str | None:
    """Why a SQLite store cannot be opened without creating it, or None."""
    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        return (f"no {what} at {path} yet (opening it would create an empty one): {fill} "
                f"creates it, or set {variable} to an existing store.")
    return None


MLFLOW_FILL = "`make demo` (or any `make figure-N`, `make run`, `make search`)"
OPTUNA_FILL = "`make search SEARCH=search-resnet20-budget`"


def missing_mlflow_store(uri: str) -> str | None:
    return missing_store(uri, "MLflow store", "MLFLOW_TRACKING_URI", MLFLOW_FILL)


# ------------------------------------------------------------------------------ MLflow

def print_links(base: str | None = None, uri: str | None = None) -> int:
    """Each of the suite's experiments with the link to its runs table (the suite's view)."""
    uri = uri or tracking.tracking_uri()
    why = missing_mlflow_store(uri)
    if why:
        print(why)
        return 1
    try:
        found = [e for e in tracking.client(uri).search_experiments()
                 if e.name.startswith(tracking.EXPERIMENT_PREFIX + "-")]
    except Exception as e:  # noqa: BLE001 - not a store, unreadable, a server not answering
        raise tracking.StoreError(tracking.describe_store_error(uri, e)) from None
    if not found:
        print(f"no experiments yet in {uri}; {MLFLOW_FILL} tracks runs there")
    for e in sorted(found, key=lambda e: e.name):
        print(f"{e.name:24s} {tracking.runs_table_url(e.experiment_id, base)}")
    return 0


def entry_point_dir(folder: Path) -> Path | None:
    """A folder declaring the `mlflow.app` entry point, for a Python path whose installed
    `reproduce` metadata lacks it (installed before it existed); None where it is installed."""
    from importlib.metadata import entry_points

    from .mlflow_app import APP_NAME, ENTRY_POINT

    if any(ep.name == APP_NAME and ep.value == ENTRY_POINT
           for ep in entry_points(group="mlflow.app")):
        return None
    info = folder / "reproduce_mlflow_app-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: reproduce-mlflow-app\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[mlflow.app]\n{APP_NAME} = {ENTRY_POINT}\n")
    return folder


def mlflow_command(uri: str, host: str, port: int, workers: int) -> list[str]:
    from .mlflow_app import APP_NAME

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", str(workers), "--app-name", APP_NAME]
    path = _sqlite_path(uri)
    if path is not None:           # artifacts of experiments made in the UI: beside the database
        cmd += ["--artifacts-destination", str(path.parent / "mlartifacts")]
    return cmd


def _stop(proc: subprocess.Popen) -> None:
    """End the server's whole process group (the server and its workers)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


class _Stopped(Exception):
    pass


def _on_term(signum, frame):
    raise _Stopped


def serve_mlflow(host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
                 jobs: bool = False) -> int:
    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a tracking server: browse it in its own UI, {uri}")
        return print_links(uri.rstrip("/"), uri)
    why = missing_mlflow_store(uri)
    if why:
        raise ServeError(why)
    check_port(host, port, "mlflow-ui", "PORT")
    base = f"http://{host}:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if jobs else "false"}
    old_term = signal.signal(signal.SIGTERM, _on_term)
    with tempfile.TemporaryDirectory(prefix="reproduce-mlflow-app-") as tmp:
        extra = entry_point_dir(Path(tmp))
        env["PYTHONPATH"] = os.pathsep.join(
            [str(p) for p in (extra, tracking.REPO_ROOT) if p] + [env.get("PYTHONPATH", "")])
        proc = subprocess.Popen(mlflow_command(uri, host, port, workers), env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            from .mlflow_app import SCRIPT_ID
            deadline = time.monotonic() + READY_TIMEOUT
            while SCRIPT_ID not in (_answers(f"{base}/") or ""):
                if proc.poll() is not None:
                    print(f"error: mlflow server stopped while starting (exit code {proc.returncode}); "
                          f"its messages are above", file=sys.stderr)
                    return proc.returncode or 1
                if time.monotonic() > deadline:
                    print(f"error: mlflow server did not answer {base}/ in {READY_TIMEOUT:.0f} s",
                          file=sys.stderr)
                    return 1
                time.sleep(0.5)
            print(f"\nMLflow UI at {base}/  (Ctrl-C stops it). The runs of each profile:")
            print_links(base, uri)
            sys.stdout.flush()
            return proc.wait()
        except (KeyboardInterrupt, _Stopped):
            return 0
        finally:
            _stop(proc)
            signal.signal(signal.SIGTERM, old_term)


# -------------------------------------------------------------------- optuna-dashboard

def serve_dashboard(storage: str, host: str = "127.0.0.1", port: int = 8080) -> int:
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
    from socketserver import ThreadingMixIn

    from .dashboard import create_app, open_storage
    from .search.storage import redact

    why = missing_store(storage, "Optuna storage", "OPTUNA_STORAGE", OPTUNA_FILL)
    if why:
        raise ServeError(why)
    check_port(host, port, "optuna-dashboard", "DASHBOARD_PORT")
    inner = open_storage(storage)
    app = create_app(inner)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):       # noqa: A002 - the base class's name
            pass

    try:
        httpd = make_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    except OSError as e:
        raise ServeError(f"cannot start optuna-dashboard on {host}:{port}: {e.strerror}. Choose "
                         f"a free port, e.g. make optuna-dashboard DASHBOARD_PORT={port + 1}") from None
    base = f"http://{host}:{port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    old_term = signal.signal(signal.SIGTERM, _on_term)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while _answers(f"{base}/api/studies") is None:
            if time.monotonic() > deadline:
                print(f"error: optuna-dashboard did not answer {base}/api/studies", file=sys.stderr)
                return 1
            time.sleep(0.2)
        studies = sorted(s.study_name for s in inner.get_all_studies())
        print(f"optuna-dashboard at {base}/dashboard  (Ctrl-C stops it), studies of "
              f"{redact(storage)}:" if studies else
              f"optuna-dashboard at {base}/dashboard  (Ctrl-C stops it); no studies yet in "
              f"{redact(storage)}: {OPTUNA_FILL} runs one")
        for name in studies:
            print(f"  {name:36s} {base}/dashboard/studies/{inner.get_study_id_from_name(name)}")
        sys.stdout.flush()
        while thread.is_alive():
            thread.join(0.5)
        return 0
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        httpd.shutdown()
        httpd.server_close()
        signal.signal(signal.SIGTERM, old_term)
