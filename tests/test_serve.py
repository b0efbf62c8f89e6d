"""`make mlflow-ui`, `make optuna-dashboard` and `links` before any server starts: a busy port and
a missing store stop them with a message and a non-zero exit, and no store is created."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from reproduce.cli import main


@pytest.fixture
def busy_port():
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def store_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("command", ["mlflow-ui", "optuna-dashboard"])
def test_a_busy_port_stops_the_ui_with_a_message(command, busy_port, isolated_stores,
                                                 monkeypatch, capsys):
    import os
    for url in (isolated_stores, os.environ["OPTUNA_STORAGE"]):
        store_file(url).touch()                    # stores exist: the port is what is wrong
    assert main([command, "--port", str(busy_port)]) == 2
    out = capsys.readouterr()
    assert f"port {busy_port} on 127.0.0.1 is already in use" in out.err
    assert "http://" not in out.out                # no links to a server that is not there


@pytest.mark.parametrize("command", [["links"], ["mlflow-ui"], ["optuna-dashboard"]])
def test_a_missing_store_is_named_and_not_created(command, isolated_stores, capsys):
    import os
    code = main(command)
    assert code != 0
    out = capsys.readouterr()
    assert "(opening it would create an empty one)" in out.out + out.err
    assert not store_file(isolated_stores).exists()
    assert not store_file(os.environ["OPTUNA_STORAGE"]).exists()


def test_links_on_a_file_that_is_not_a_store_says_so(isolated_stores, capsys):
    store_file(isolated_stores).write_text("not a database")
    assert main(["links"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert store_file(isolated_stores).read_text() == "not a database"
