"""Knative's own drain tests run against a cluster this suite judged: logs and one record.

Why: the gate's worth is what it catches that Knative's tests pass. So their tests are
run as their CI runs them (``go test -v -tags=e2e`` binaries, ``-ingressendpoint`` at a
node address with the ingress Service's NodePort, Kourier's gateway named by
``GATEWAY_OVERRIDE``), on the cluster this suite ran on, and every test's result is read
from its ``go test -v`` log, which is kept whole next to the record.

Nothing is retried (``-test.count=1``), tests run one at a time (``-test.parallel=1``, as
upstream's kind CI), and what they need is put back after: the namespaces of
``test/config/cluster-resources.yaml`` are deleted, the activator HPA patched for the HA
tests (``minReplicas`` 2, as upstream's HA jobs run) is restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from ..builders.upstream_tests import UpstreamBuild, UpstreamTest
from ..host.signals import shielded
from ..platforms.cluster.api import ClusterError, wait_until
from ..platforms.cluster.apply import Applier
from ..platforms.cluster.knative_config import KnativeConfigPatch

Progress = Callable[[str], None]
RECORD_KIND = "knative-drain-upstream"
INGRESS_CLASS = "kourier.ingress.networking.knative.dev"
GATEWAY_ENV = {
    "SYSTEM_NAMESPACE": "knative-serving",
    "GATEWAY_OVERRIDE": "kourier",
    "GATEWAY_NAMESPACE_OVERRIDE": "kourier-system",
}
#: upstream's kind-e2e leg: gotestsum -- -count=1 -parallel=1 -tags=e2e -timeout=35m
DEFAULT_TIMEOUT = "35m"
_RESULT = re.compile(r"^--- (PASS|FAIL|SKIP): (Test\w+) \(([\d.]+)s\)", re.MULTILINE)
HA_ACTIVATORS = 2
HA_WAIT_S = 300.0  # for the second activator to be available, else the HA tests are NOT RUN


@dataclass
class TestResult:
    """One upstream test's outcome, as its ``go test -v`` log gives it."""

    name: str
    package: str
    checks: str
    result: str  # PASS, FAIL, SKIP, or NOT RUN (the binary ended before it: timeout, panic)
    seconds: float | None
    failure: list[str] = field(default_factory=list)  # the log's error lines, first few


def parse_results(log: str) -> dict[str, tuple[str, float]]:
    """Top-level test -> (result, seconds) from ``go test -v`` output (subtests, indented
    under their parent, are left out)."""
    return {m[2]: (m[1], float(m[3])) for m in _RESULT.finditer(log)}


def failure_lines(log: str, test: str, limit: int = 8) -> list[str]:
    """The ``file_test.go:NN: message`` lines logged inside ``test``'s run (what it failed on)."""
    start = log.find(f"=== RUN   {test}\n")
    end = log.find(f"--- FAIL: {test} ", start)
    if start < 0 or end < 0:
        return []
    lines = [ln.strip() for ln in log[start:end].splitlines()]
    errors = [ln for ln in lines if re.match(r"^\w+_test\.go:\d+: ", ln) and _is_error(ln)]
    return [_clip(e) for e in errors[:limit]]


def _clip(line: str, most: int = 400) -> str:
    """A failure line as long as a reader needs (a pod dump can run to kilobytes)."""
    return line if len(line) <= most else f"{line[: most - 40]} ... [{len(line)} chars]"


def _is_error(line: str) -> bool:
    return bool(re.search(r"(?i)fail|error|unexpected|timed out|SLO|status", line))


def go_test_command(
    binary: Path,
    tests: list[UpstreamTest],
    *,
    kubeconfig: Path,
    kube_cluster: str,
    ingress_endpoint: str,
    build: UpstreamBuild,
    timeout: str = DEFAULT_TIMEOUT,
) -> list[str]:
    """The test binary's command line: upstream's flags, our cluster and images."""
    names = "|".join(t.name for t in tests)
    return [
        str(binary),
        "-test.v",
        f"-test.run=^({names})$",
        "-test.count=1",
        "-test.parallel=1",
        f"-test.timeout={timeout}",
        f"-kubeconfig={kubeconfig}",
        f"-cluster={kube_cluster}",
        f"-dockerrepo={build.images_repo}",
        f"-tag={build.module_version}",
        f"-ingress-class={INGRESS_CLASS}",
        f"-ingressendpoint={ingress_endpoint}",
    ]


def run_upstream(
    api: k8s.ApiClient,
    build: UpstreamBuild,
    *,
    kubeconfig: Path,
    kube_cluster: str,
    ingress_endpoint: str,
    out_dir: Path,
    facts: dict[str, Any],
    timeout: str = DEFAULT_TIMEOUT,
    progress: Progress = print,
) -> dict[str, Any]:
    """Run ``build``'s tests package by package; write ``upstream-<version>-<pkg>.log`` per
    package and ``upstream-<version>.json``; return that record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    resources = _test_resources(build.source)
    results: list[TestResult] = []
    runs: list[dict[str, Any]] = []
    try:
        with Applier(api, progress=progress) as applier:
            applier.apply(resources)
        for package, binary in build.binaries.items():
            tests = [t for t in build.tests if t.package == package]
            log_path = out_dir / f"upstream-{build.version}-{package.rsplit('/', 1)[-1]}.log"
            command = go_test_command(
                binary,
                tests,
                kubeconfig=kubeconfig,
                kube_cluster=kube_cluster,
                ingress_endpoint=ingress_endpoint,
                build=build,
                timeout=timeout,
            )
            progress(f"upstream: {package}: {', '.join(t.name for t in tests)} -> {log_path}")
            # the HA tests need HA_ACTIVATORS available; the patch waits for them
            patch = (
                KnativeConfigPatch(
                    api,
                    activator_replicas=HA_ACTIVATORS,
                    roll_timeout_s=HA_WAIT_S,
                    progress=progress,
                )
                if package == "test/ha"
                else contextlib.nullcontext()
            )
            try:
                with patch:
                    code, seconds = _run_logged(command, build.source / package, log_path)
            except ClusterError as exc:  # its precondition never held: said, not run
                why = f"not run: {exc}"
                progress(f"upstream: {package}: {why}")
                results += [
                    TestResult(t.name, package, t.checks, "NOT RUN", None, [why]) for t in tests
                ]
                runs.append({"package": package, "command": command, "not_run": why})
                continue
            log = log_path.read_text(errors="replace")
            found = parse_results(log)
            for t in tests:
                result, secs = found.get(t.name, ("NOT RUN", None))
                fails = failure_lines(log, t.name) if result == "FAIL" else []
                results.append(TestResult(t.name, package, t.checks, result, secs, fails))
            runs.append(
                {
                    "package": package,
                    "command": command,
                    "env": GATEWAY_ENV,
                    "exit_code": code,
                    "seconds": round(seconds, 1),
                    "log": log_path.name,
                }
            )
    finally:
        with shielded():
            _delete_namespaces(api, resources, progress)
    record = {
        "kind": RECORD_KIND,
        "knative_version": build.version,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build": build.describe(),
        "cluster": facts,
        "ingress_endpoint": ingress_endpoint,
        "runs": runs,
        "tests": [asdict(r) for r in results],
        "passed": not any(r.result == "FAIL" for r in results),  # no test failed
        "complete": all(r.result in ("PASS", "SKIP", "FAIL") for r in results),  # all ran
    }
    path = out_dir / f"upstream-{build.version}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _run_logged(command: list[str], cwd: Path, log_path: Path) -> tuple[int, float]:
    """Run the test binary with its output going whole into ``log_path``; on any exit from
    here (a signal) its process group is killed, so no test goes on driving the cluster."""
    started = time.monotonic()
    with log_path.open("w") as log:
        log.write(f"# {' '.join(command)}\n# cwd: {cwd}\n")
        log.write("".join(f"# {k}={v}\n" for k, v in GATEWAY_ENV.items()))
        log.flush()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **GATEWAY_ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait()
        except BaseException:
            with shielded():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    return code, time.monotonic() - started


def _test_resources(source: Path) -> list[dict[str, Any]]:
    """test/config's cluster-resources.yaml (namespaces) and test-resources.yaml."""
    docs: list[dict[str, Any]] = []
    for name in ("cluster-resources.yaml", "test-resources.yaml"):
        path = source / "test" / "config" / name
        if path.is_file():
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _delete_namespaces(api: k8s.ApiClient, docs: list[dict[str, Any]], progress: Progress) -> None:
    core = k8s.CoreV1Api(api)
    names = [d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"]
    for name in names:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)

    def check() -> str | None:
        left = [n for n in names if core.list_namespace(field_selector=f"metadata.name={n}").items]
        return f"namespaces still terminating: {', '.join(left)}" if left else None

    try:
        wait_until(check, "the test namespaces deleted", timeout_s=300, progress=progress)
    except ClusterError as exc:
        progress(f"upstream: {exc}")


def run_on_kind(
    release_version: str,
    *,
    cluster_name: str,
    kubeconfig: Path | None,
    families: list[str],
    out_dir: Path,
    kind_version: str,
    timeout: str = DEFAULT_TIMEOUT,
    progress: Progress = print,
) -> dict[str, Any]:
    """Build Knative ``release_version``'s tests of ``families``, load their images into
    the kind cluster ``cluster_name`` (which must run that release) and run them there."""
    import docker

    from ..builders.kind_cli import ensure_kind
    from ..builders.upstream_tests import build_upstream_tests
    from ..platforms.cluster.api import api_client, knative_serving_version, kubernetes_version
    from ..platforms.kind_cluster import KindCluster

    cluster = KindCluster(ensure_kind(kind_version, progress), cluster_name, kubeconfig)
    if not cluster.exists():
        raise ClusterError(
            f"--cluster-name={cluster_name}: no such kind cluster; make one with `pytest "
            f"conformance --platform=kind --knative-version={release_version} --keep-cluster`"
        )
    config = kubeconfig or Path(
        os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config"
    )
    if kubeconfig is None:  # kind's default kubeconfig may have lost the context: put it back
        cluster.export_kubeconfig()
    api = api_client(config, cluster.context)
    running, where = knative_serving_version(api)
    if running != release_version:
        raise ClusterError(
            f"--knative-version={release_version}: kind cluster {cluster_name!r} runs Knative "
            f"{running or 'nothing'} ({where})"
        )
    client = docker.from_env(timeout=600)
    try:
        build = build_upstream_tests(client, release_version, families, progress)
    finally:
        client.close()
    for ref in build.images.values():
        cluster.load_image(ref)
    facts = {
        "platform": "kind",
        "cluster_name": cluster_name,
        "kubernetes_version": kubernetes_version(api),
        "knative_version": running,
        "knative_version_from": where,
    }
    return run_upstream(
        api,
        build,
        kubeconfig=config,
        kube_cluster=cluster.context,  # kind names the kubeconfig cluster as the context
        ingress_endpoint=cluster.node_address(),
        out_dir=out_dir,
        facts=facts,
        timeout=timeout,
        progress=progress,
    )


def summary_lines(record: dict[str, Any]) -> list[str]:
    """One line per test: result, seconds, name, and what it failed on."""
    lines = []
    for t in record["tests"]:
        secs = f"{t['seconds']:.1f} s" if t["seconds"] is not None else "-"
        lines.append(f"{t['result']:<8} {secs:>9}  {t['name']}")
        lines += [f"           {f}" for f in t["failure"][:3]]
    absent = record["build"]["absent_in_release"]
    if absent:
        lines.append(f"not in Knative {record['knative_version']}: {', '.join(absent)}")
    return lines
