"""kind platform plumbing: preflight errors, arguments and cleanup on failure.

A real kind cluster takes minutes and a built node image (the kind-e2e run, see docs/verified.md),
so these fast tests give the platform a recording stand-in for the kind command that
answers ``kind version/get/create/delete`` and keeps the config it was given; what is
checked is what this project passes to kind and what it does when kind fails.
"""

from __future__ import annotations

import socket

import pytest
import yaml

from pytest_knative_drain.knative import catalog
from pytest_knative_drain.knative.kind_plan import render_kind_config
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.platforms.kind import KindPlatform, check_docker, find_kind


def _fake_kind(tmp_path, version: str):
    # A real executable printing kind's `version` line format (kind cmd/kind/version).
    path = tmp_path / "kind"
    path.write_text(f"#!/bin/sh\necho 'kind v{version} go1.22.1 linux/amd64'\n")
    path.chmod(0o755)
    return path


def test_missing_kind_names_the_needed_version(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    release = catalog.resolve("1.14")
    with pytest.raises(ClusterError, match=r"kind binary >= 0.22.0 .* not found on PATH"):
        find_kind(release)
    with pytest.raises(ClusterError, match="does not exist"):
        find_kind(release, tmp_path / "nope")


def test_kind_version_gate(tmp_path) -> None:
    release = catalog.resolve("1.14")
    with pytest.raises(ClusterError, match=r"kind 0.17.0 .* too old .* install kind >= 0.22.0"):
        find_kind(release, _fake_kind(tmp_path, "0.17.0"))
    path, version = find_kind(release, _fake_kind(tmp_path, "0.22.0"))
    assert version == "0.22.0" and path.name == "kind"


def test_docker_missing_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ClusterError, match="needs a running Docker engine"):
        check_docker()


def _recording_kind(tmp_path, *, existing: str = "", create_rc: int = 1):
    """A kind stand-in that records every call (and the config it is given), for plumbing."""
    log = tmp_path / "kind-calls"
    path = tmp_path / "bin" / "kind"
    path.parent.mkdir()
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'case "$1" in\n'
        "  version) echo 'kind v0.22.0 go1.22.1 linux/amd64' ;;\n"
        f"  get) printf '{existing}' ;;\n"
        f'  export) cp {tmp_path}/exported-kubeconfig "$6" ;;\n'
        '  create) for a in "$@"; do [ -f "$a" ] && cp "$a" '
        f"{tmp_path}/seen-config.yaml; done; echo 'ERROR: no node image here' >&2; "
        f"exit {create_rc} ;;\n"
        "esac\n"
    )
    path.chmod(0o755)
    return path, log


def _manifests_dir(tmp_path):
    directory = tmp_path / "manifests"
    directory.mkdir(exist_ok=True)
    for name in ("serving-crds", "serving-core", "kourier"):
        (directory / f"{name}.yaml").write_text("")
    return directory


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # kind config
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))  # never the user's


def _docker_or_skip() -> None:
    try:
        check_docker()
    except ClusterError as exc:
        pytest.skip(str(exc))


def test_kind_platform_fails_fast_before_any_cluster(tmp_path, monkeypatch) -> None:
    _docker_or_skip()
    monkeypatch.chdir(tmp_path)
    kind, log = _recording_kind(tmp_path)
    release = catalog.resolve("1.14")
    with pytest.raises(ClusterError, match=r"app image 'me/app:1': name it under one of"):
        KindPlatform.create(release, run_id="r", app_image="me/app:1", kind_path=kind)
    with pytest.raises(ClusterError, match=r"--knative-manifests-dir: .*serving-crds.yaml"):
        KindPlatform.create(
            release, run_id="r", app_image="dev.local/app:1", kind_path=kind,
            manifests_dir=tmp_path,
        )  # fmt: skip
    assert not log.exists() or "create" not in log.read_text()  # nothing created on bad input


def test_kind_platform_plumbing_and_cleanup_on_failure(tmp_path, monkeypatch) -> None:
    _docker_or_skip()
    monkeypatch.chdir(tmp_path)
    kind, log = _recording_kind(tmp_path)
    release = catalog.resolve("1.14")
    notes: list[str] = []
    with pytest.raises(ClusterError, match="kind create cluster knative-drain failed .*no node"):
        KindPlatform.create(
            release, run_id="r", app_image="dev.local/app:1", kind_path=kind,
            manifests_dir=_manifests_dir(tmp_path), host_port=18080, workers=1,
            progress=notes.append,
        )  # fmt: skip
    calls = log.read_text().splitlines()
    create = next(c for c in calls if c.startswith("create cluster"))
    assert "--name knative-drain" in create and "--config" in create and "--retain" in create
    assert "--image" not in create  # the node image is pinned in the config, by digest
    config = yaml.safe_load((tmp_path / "seen-config.yaml").read_text())
    assert config == render_kind_config(release, host_port=18080, workers=1)
    assert calls[-1].startswith("delete cluster --name knative-drain")  # cleaned up
    assert any(c.startswith("export logs") for c in calls)  # node logs kept for the error
    assert any("creating kind cluster 'knative-drain'" in n for n in notes)
    assert any("deleting kind cluster" in n for n in notes)


def test_existing_kind_cluster_is_reused_only_when_kept(tmp_path, monkeypatch) -> None:
    _docker_or_skip()
    monkeypatch.chdir(tmp_path)
    kind, log = _recording_kind(tmp_path, existing="knative-drain\\n")
    release = catalog.resolve("1.14")
    with pytest.raises(ClusterError, match="already exists; pass --keep-cluster to reuse it"):
        KindPlatform.create(
            release, run_id="r", app_image="dev.local/app:1", kind_path=kind,
            manifests_dir=_manifests_dir(tmp_path),
        )  # fmt: skip
    assert not any(c.startswith(("create", "delete")) for c in log.read_text().splitlines())
    # Kept: kind exports the cluster's kubeconfig (here: an API server that is not there);
    # the failure names it, and a cluster this run did not create is never deleted.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "exported-kubeconfig").write_text(
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kind-knative-drain",
            "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "kind-knative-drain",
                          "context": {"cluster": "c", "user": "u"}}],
        })
    )  # fmt: skip
    with pytest.raises(ClusterError, match=rf"127.0.0.1:{port}\) does not answer"):
        KindPlatform.create(
            release, run_id="r", app_image="dev.local/app:1", kind_path=kind, keep=True,
            manifests_dir=_manifests_dir(tmp_path), kubeconfig=tmp_path / "kubeconfig",
        )  # fmt: skip
    calls = log.read_text().splitlines()
    assert any(c.startswith("export kubeconfig --name knative-drain --kubeconfig") for c in calls)
    assert not any(c.startswith(("create", "delete")) for c in calls)


def test_plugin_kind_bad_app_image_is_a_clear_failure(pytester, monkeypatch, tmp_path) -> None:
    _docker_or_skip()
    kind, _ = _recording_kind(tmp_path)
    monkeypatch.setenv("PATH", str(kind.parent))
    pytester.makepyfile("def test_run(drain): drain.run('pod-delete-long')")
    result = pytester.runpytest("--platform=kind", "--app-image=me/app:1", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "name it under one of kind.local, ko.local, dev.local" in out
    assert "Traceback" not in out


def test_manifests_dir_option_is_checked(pytester, tmp_path) -> None:
    pytester.makepyfile("def test_run(drain_options): print(drain_options)")
    missing = tmp_path / "nope"
    result = pytester.runpytest(f"--knative-manifests-dir={missing}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"--knative-manifests-dir={missing}: not a directory" in err
    assert "Traceback" not in err
    directory = _manifests_dir(tmp_path)
    result = pytester.runpytest(
        f"--knative-manifests-dir={directory}", "--allow-cluster-config", "-s", "-p",
        "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert (
        "allow_cluster_config=True" in out
        and f"knative_manifests_dir=PosixPath('{directory}')" in out
    )
