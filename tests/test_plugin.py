"""Plugin behaviour through pytester: options, ini keys, usage errors, parametrization."""

import json
import re
from pathlib import Path

import pytest

from pytest_knative_drain.knative import catalog

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_one_option_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    assert "knative-drain" in out
    for flag in (
        "--knative-version",
        "--platform",
        "--context",
        "--profile",
        "--app-image",
        "--drain-report",
        "--kubeconfig",
        "--keep-cluster",
    ):
        assert flag in out, flag
    for ini in ("knative_version", "platform", "profile", "drain_report"):
        assert ini in out, ini


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--platform=minikube"], ["--platform=minikube", "kind, existing, local"]),
        (["--profile=long"], ["--profile=long", "quick, seed"]),
        (["--knative-version=0.9"], ["--knative-version=0.9", "1.10", "1.23"]),
        (["--knative-version=1.14.99"], ["--knative-version=1.14.99", "1.14.0"]),
        (["--context=prod", "--platform=local"], ["--context=prod", "--platform=existing"]),
        (["--ingress-port=80x"], ["--ingress-port=80x", "1 to 65535"]),
        (["--ingress-port=70000"], ["--ingress-port=70000", "1 to 65535"]),
        (
            ["--ingress-url=http://172.18.0.2:31080", "--platform=kind"],
            ["--ingress-url=http://172.18.0.2:31080", "only applies to --platform=existing"],
        ),
        (
            ["--ingress-url=http://172.18.0.2", "--ingress-port=8080", "--platform=existing"],
            ["--ingress-url=http://172.18.0.2", "--ingress-port", "give one"],
        ),
        (
            ["--ingress-url=http://gw.example.com/apps", "--platform=existing"],
            ["--ingress-url=http://gw.example.com/apps", "Host header"],
        ),
        (
            ["--ingress-url=http://gw:99999", "--platform=existing"],
            ["--ingress-url=http://gw:99999", "1 to 65535"],
        ),
        (
            ["--app-registry=reg.example.com", "--platform=local"],
            ["--app-registry=reg.example.com", "--platform=existing"],
        ),
        (
            ["--app-registry=https://reg.example.com", "--platform=existing"],
            ["--app-registry=https://reg.example.com", "no scheme"],
        ),
    ],
)
def test_bad_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], names: list[str]
) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for name in names:
        assert name in err, (name, err)
    assert "Traceback" not in err + result.stdout.str()


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nplatform = docker\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--platform=docker" in result.stderr.str()
    assert "ini key 'platform'" in result.stderr.str()


def test_ini_keys_resolve_and_cli_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nknative_version = 1.13\nprofile = seed\nplatform = local\n")
    pytester.makepyfile(
        """
        import json
        def test_options(drain_options):
            print("OPTS=" + json.dumps({"version": drain_options.release.version,
                                        "profile": drain_options.profile,
                                        "platform": drain_options.platform}))
        """
    )
    newest_113 = catalog.resolve("1.13").version
    result = pytester.runpytest("-s")
    assert _opts(result) == {"version": newest_113, "profile": "seed", "platform": "local"}
    result = pytester.runpytest("-s", "--knative-version=1.14.0", "--profile=quick")
    assert _opts(result) == {"version": "1.14.0", "profile": "quick", "platform": "local"}


def test_knative_version_request_is_known_only_when_given(pytester: pytest.Pytester) -> None:
    """--platform=existing reports the cluster's version; it must know whether one was asked."""
    pytester.makepyfile(
        """
        def test_options(drain_options):
            print("REQ=" + repr(drain_options.knative_version_requested)
                  + " VER=" + drain_options.release.version)
        """
    )
    default = pytester.runpytest("-s").stdout.str()
    assert f"REQ=None VER={catalog.resolve('1.14').version}" in default
    assert "REQ='1.16' VER=" in pytester.runpytest("-s", "--knative-version=1.16").stdout.str()
    pytester.makeini("[pytest]\nknative_version = 1.13\n")
    assert "REQ='1.13' VER=" in pytester.runpytest("-s").stdout.str()


def _opts(result: pytest.RunResult) -> dict:
    found = re.search(r"OPTS=(\{.*?\})", result.stdout.str())
    assert found, result.stdout.str()
    return json.loads(found.group(1))


def test_drain_app_is_parametrized_over_fixture_apps(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_app(drain_app): print(drain_app.name)")
    result = pytester.runpytest("--collect-only", "-q", "--platform=local")
    out = result.stdout.str()
    for name in (
        "python-gunicorn-exec",
        "python-gunicorn-shell",
        "python-gunicorn-default-timeout",
        "go-shutdown",
        "go-exit",
    ):
        assert f"test_app[{name}]" in out
    result = pytester.runpytest("--collect-only", "-q", "--app-image=me/app:1")
    assert "test_app[custom]" in result.stdout.str()
    assert "go-exit" not in result.stdout.str()


def test_cluster_platforms_fail_with_a_clear_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What passes configure but fails when the platform comes up: one line, no traceback."""
    pytester.makepyfile("def test_run(drain): drain.run('pod-delete-long')")
    monkeypatch.setenv("PATH", str(pytester.path))  # no kind here, even where CI has one
    # release manifests at hand and --kind-build=release: nothing is downloaded or built
    manifests = pytester.mkdir("manifests")
    for name in ("serving-crds", "serving-core", "kourier"):
        (manifests / f"{name}.yaml").write_text("")
    # No kind binary on this PATH: the kind platform names the binary and version it needs.
    result = pytester.runpytest(
        "--platform=kind",
        "--kind-build=release",
        "--knative-manifests-dir=manifests",
        "-k",
        "exec",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "--platform=kind needs the kind binary >= 0.22.0" in out
    assert "not found on PATH" in out
    assert "Traceback" not in out and "During handling" not in out
    # A kubeconfig whose context exists (configure checks that) but names a cluster that
    # does not: the existing platform names the file it could not load.
    kubeconfig = pytester.path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "contexts: [{name: a, context: {cluster: gone, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\nclusters: []\n"
    )
    result = pytester.runpytest(
        "--platform=existing", f"--kubeconfig={kubeconfig}", "-k", "exec", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert f"cannot load --kubeconfig={kubeconfig}" in out
    assert "Traceback" not in out and "During handling" not in out


def test_kind_gets_worker_nodes_only_when_a_node_drain_case_is_selected(
    pytester: pytest.Pytester,
) -> None:
    """Node drain needs somewhere for the pods to go: kind is made with 2 workers then."""
    pytester.makepyfile(
        workers_probe="""
        from pytest_knative_drain.fixtures import _workers

        def pytest_collection_finish(session):
            print(f"workers={_workers(session)}")
        """
    )
    pytester.syspathinsert()

    def workers(*args: str) -> str:
        result = pytester.runpytest(
            str(ROOT / "conformance"), "-p", "workers_probe", "--collect-only", *args
        )
        found = re.search(r"workers=\d+", result.stdout.str())
        return found.group(0) if found else result.stdout.str()

    assert workers("--platform=kind", "-k", "node_drain") == "workers=2"
    assert workers("--platform=kind", "-k", "rollout") == "workers=0"
    # on the local platform node drain is skipped: no workers to make
    assert workers("--platform=local", "-k", "node_drain") == "workers=0"
