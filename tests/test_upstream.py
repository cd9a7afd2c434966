"""Knative's own drain tests: which a release has, how they are run, how their log is read.

The log reader is tested on the output of a real ``go test -v`` run (a package written
here with passing, failing, skipped and sub-tests), the test inventory on the real serving
modules of 1.14 and 1.23. Running them on a cluster is ``knative-drain upstream`` (its
logs are under evidence/, named upstream).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_knative_drain.builders import gomod, upstream_tests
from pytest_knative_drain.builders.upstream_tests import FAMILIES, UpstreamBuild
from pytest_knative_drain.run import upstream

GO_TESTS = """package drain

import (
\t"testing"
\t"time"
)

func TestDestroyPodInflight(t *testing.T) {
\tt.Log("sending request")
\ttime.Sleep(10 * time.Millisecond)
}

func TestDestroyPodWithRequests(t *testing.T) {
\tt.Log("deleting pod")
\tt.Run("sub", func(t *testing.T) {})
\tt.Errorf("Request failed: unexpected status 502")
}

func TestWebSocketGracefulShutdown(t *testing.T) {
\tt.Skip("not on this ingress")
}
"""


@pytest.fixture(scope="module")
def go_test_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("gotest")
    (work / "go.mod").write_text("module example.local/drain\n\ngo 1.22\n")
    (work / "drain_test.go").write_text(GO_TESTS)
    done = subprocess.run(
        [gomod.go_binary(), "test", "-v", "-count=1", "."],
        cwd=work,
        env=gomod.go_env(GOFLAGS=""),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # one test fails
    return done.stdout


def test_results_are_read_from_a_real_go_test_log(go_test_log: str) -> None:
    found = upstream.parse_results(go_test_log)
    assert {name: result for name, (result, _s) in found.items()} == {
        "TestDestroyPodInflight": "PASS",
        "TestDestroyPodWithRequests": "FAIL",  # its subtest "sub" passed: not a top-level row
        "TestWebSocketGracefulShutdown": "SKIP",
    }
    assert found["TestDestroyPodInflight"][1] >= 0.01
    assert upstream.failure_lines(go_test_log, "TestDestroyPodWithRequests") == [
        "drain_test.go:16: Request failed: unexpected status 502"
    ]
    assert upstream.failure_lines(go_test_log, "TestDestroyPodInflight") == []


def test_each_release_runs_the_tests_its_source_has() -> None:
    """TestWebSocketGracefulShutdown came with 1.22: 1.14's module lacks it, 1.23's has it."""
    old = Path(gomod.download("knative.dev/serving", "v0.41.2")["Dir"])
    new = Path(gomod.download("knative.dev/serving", "v0.50.0")["Dir"])
    every = upstream_tests.select(list(FAMILIES))
    have_old = {t.name for t in every if upstream_tests.present(old, t)}
    have_new = {t.name for t in every if upstream_tests.present(new, t)}
    assert have_new == {t.name for t in every}
    assert have_new - have_old == {"TestWebSocketGracefulShutdown"}
    for source in (old, new):  # the images they deploy are there to build
        for t in every:
            if upstream_tests.present(source, t):
                for image in t.images:
                    assert (source / "test" / "test_images" / image).is_dir(), (t.name, image)
        assert (source / "test" / "config" / "cluster-resources.yaml").is_file()
    docs = upstream._test_resources(new)
    assert {"serving-tests", "serving-tests-alt"} <= {
        d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"
    }


def test_the_command_line_is_upstream_ci_flags_on_our_cluster(tmp_path: Path) -> None:
    build = UpstreamBuild(
        "1.23.0",
        "v0.50.0",
        tmp_path,
        {"test/e2e": tmp_path / "e2e.test"},
        {"timeout": upstream_tests.image_ref("timeout", "v0.50.0")},
        list(FAMILIES["destroypod"]),
        [],
    )
    command = upstream.go_test_command(
        tmp_path / "e2e.test",
        build.tests,
        kubeconfig=tmp_path / "kubeconfig",
        kube_cluster="kind-knative-drain",
        ingress_endpoint="172.18.0.2",
        build=build,
    )
    assert command[1:6] == [
        "-test.v",
        "-test.run=^(TestDestroyPodInflight|TestDestroyPodTimely|TestDestroyPodWithRequests)$",
        "-test.count=1",
        "-test.parallel=1",
        "-test.timeout=35m",
    ]
    assert "-dockerrepo=dev.local/knative-drain-upstream" in command
    assert "-tag=v0.50.0" in command  # image path {repo}/{name}:{tag} = the built image
    assert build.images["timeout"] == "dev.local/knative-drain-upstream/timeout:v0.50.0"
    assert "-ingressendpoint=172.18.0.2" in command
    assert "-cluster=kind-knative-drain" in command
