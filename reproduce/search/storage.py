"""Where studies live: the Optuna storage URL, and opening a store robustly from many processes.

Several workers may open the same SQLite file or database at once: creating a fresh SQLite store is
serialised by a lock file, and transient store errors are retried with back-off.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import filelock
import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from .. import tracking
from ..config import ConfigError
from .spec import HEARTBEAT_DEFAULTS


def storage_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("OPTUNA_STORAGE") or \
        f"sqlite:///{tracking.REPO_ROOT / 'optuna.db'}"


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show as is
        return url


@contextlib.contextmanager
def sqlite_init_lock(url: str):
    """Serialise creating (and migrating) a SQLite store between processes on this machine.

    Two processes that create the tables of a fresh SQLite file at the same moment can leave it
    half-migrated (MLflow's alembic migrations are not atomic on SQLite). A SQLite file is only
    ever shared on one machine, so a lock file is enough; database servers need nothing. One lock
    file per user serves every SQLite store: initialisation takes a second, so sharing it costs
    nothing, and nothing is written beside the store (nor left per store in the temp directory).
    """
    if not url.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(tempfile.gettempdir()) / f"reproduce-sqlite-init-{os.getuid()}.lock"
    with filelock.FileLock(lock_path):
        yield


def _transient() -> tuple[type[BaseException], ...]:
    # mlflow is imported here, not at the top: it takes seconds, and search-best and pareto, which
    # open the Optuna storage through this module, never touch MLflow.
    from mlflow.exceptions import MlflowException
    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, MlflowException,
            tracking.StoreError)


def _creation_race(e: Exception) -> bool:
    """PostgreSQL: another worker created the same table or type a moment earlier."""
    import sqlalchemy.exc
    return isinstance(e, sqlalchemy.exc.ProgrammingError) and \
        getattr(getattr(e, "orig", None), "sqlstate", None) in ("42P07", "42710")


def retrying(what: str, fn, attempts: int = 8):
    """Run fn, retrying transient store errors (two processes creating the same tables, SQLite
    locks past the busy timeout) with a jittered back-off instead of crashing the worker."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:
            if not (isinstance(e, _transient()) or _creation_race(e)) or i == attempts - 1:
                raise
            wait = min(30.0, 0.5 * 2 ** i) * (0.5 + random.random())
            print(f"[search] {what}: {type(e).__name__}: {str(e)[:200]}; retrying in {wait:.1f}s",
                  file=sys.stderr)
            time.sleep(wait)


def make_storage(url: str, heartbeat: dict | None = None, on_failed=None):
    """An RDBStorage with heartbeats, retry of dead workers' trials and a SQLite busy timeout."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("sqlite:///"):
        parent = Path(url[len("sqlite:///"):]).resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"Optuna storage {url}: directory {parent} does not exist; create it or "
                              f"set OPTUNA_STORAGE to sqlite:///path/optuna.db or a database URL")
        engine_kwargs = {"connect_args": {"timeout": 60}}    # wait on locks, do not fail
    elif "://" not in url:
        raise ConfigError(f"Optuna storage {url!r} is not a database URL; use e.g. "
                          f"sqlite:///optuna.db or postgresql://user:pass@host/db")
    else:
        engine_kwargs = {"pool_pre_ping": True}
    hb = heartbeat or HEARTBEAT_DEFAULTS
    retry = optuna.storages.RetryFailedTrialCallback(max_retry=hb["max_retry"])

    def failed(study, trial) -> None:       # a trial whose worker stopped sending heartbeats
        retry(study, trial)
        if on_failed is not None:
            on_failed(study, trial)

    def build():
        try:
            with sqlite_init_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=hb["interval"],
                                                  grace_period=hb["grace_period"],
                                                  failed_trial_callback=failed)
        except ImportError as e:
            raise ConfigError(f"Optuna storage {redact(url)}: database driver missing ({e}); for "
                              f"PostgreSQL: pip install 'psycopg[binary]' (make setup installs it)") from None
    return retrying(f"opening Optuna storage {redact(url)}", build)
