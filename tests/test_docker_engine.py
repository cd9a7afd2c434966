"""ensure_engine against the machine's real Docker engine, and its errors without one."""

from __future__ import annotations

import subprocess

import pytest

from pytest_knative_drain.host import docker_engine
from pytest_knative_drain.host.docker_engine import DockerEngineError, ensure_engine


def test_a_docker_host_that_does_not_answer_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert docker_engine.engine_answers() is False
    with pytest.raises(DockerEngineError, match="DOCKER_HOST=unix://.*does not answer"):
        ensure_engine(install=False)


def test_state_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert docker_engine.state_dir() == tmp_path / "knative-drain"
    assert (tmp_path / "knative-drain").is_dir()


@pytest.mark.slow
def test_a_running_engine_is_used_as_is_and_twice_the_same():
    if not docker_engine.engine_answers():
        pytest.skip("no Docker engine answers here (start dockerd, or call ensure_engine())")
    first = ensure_engine(install=False)
    second = ensure_engine(install=True)
    assert first == second
    assert first.started_pid is None and not first.installed_now
    assert first.server_version[0].isdigit(), first
    assert first.storage_driver and first.api_version[0].isdigit()
    facts = first.describe()
    assert facts["docker_server_version"] == first.server_version
    client = docker_engine.docker_client()
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_a_dockerd_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    """The start path's failure report, with a real process that exits at once."""
    log = tmp_path / "dockerd.log"
    log.write_text("failed to start daemon: pid file found, ensure docker is not running\n")
    proc = subprocess.Popen(["false"])
    proc.wait()
    with pytest.raises(DockerEngineError, match=r"dockerd exited with code 1(.|\n)*pid file found"):
        docker_engine._wait_for_engine(5.0, proc, log)
