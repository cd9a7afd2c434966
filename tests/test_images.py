"""Local platform images and the fixture apps' HTTP contract and SIGTERM behaviour.

The slow tests use the real Docker engine: the first run builds the images (a few
minutes: debootstrap, the queue-proxy Go build), later runs reuse them from the cache.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from tenacity import retry, stop_after_delay, wait_fixed

from pytest_knative_drain.builders import images
from pytest_knative_drain.builders.images import ImagesError
from pytest_knative_drain.host import docker_engine

SERVING_VERSION = "1.14.2"
GO_MODULE_VERSION = "v0.41.2"
TEST_LABEL = "knative-drain.test"
APPS = images.fixture_apps()


# --- fast checks: inputs and fixtures ----------------------------------------------------


def test_the_five_fixture_apps_exist_and_the_readme_names_each():
    assert APPS == [
        "go-exit",
        "go-shutdown",
        "python-gunicorn-default-timeout",
        "python-gunicorn-exec",
        "python-gunicorn-shell",
    ]
    readme = (images.apps_dir() / "README.md").read_text()
    for app in APPS:
        assert f"- {app}: " in readme, app


def test_debian_mirror_is_read_from_the_deb822_stanza_of_the_suite(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert images.debian_mirror(sources) == "http://mirror.invalid/debian"
    with pytest.raises(ImagesError, match="no stanza with 'Suites: trixie'"):
        images.debian_mirror(sources, suite="trixie")
    with pytest.raises(ImagesError, match="cannot read the Debian mirror"):
        images.debian_mirror(tmp_path / "missing.sources")


@pytest.mark.parametrize(
    ("serving", "module", "message"),
    [
        ("1.14", "v0.41.2", "serving_version '1.14': expected 1.X.Y"),
        ("1.14.2", "0.41.2", "go_module_version '0.41.2': expected v0.N.Y"),
        ("1.14.2", "v0.42.2", "is not Knative 1.14.2: its Go module version is v0.41.2"),
    ],
)
def test_bad_versions_are_refused_before_any_work(serving, module, message):
    with pytest.raises(ImagesError, match=message):
        images.provision_local(serving, module, progress=lambda _: None)


def test_unknown_app_names_the_accepted_values():
    with pytest.raises(ImagesError, match="unknown fixture app.*nope.*accepted values: go-exit"):
        images.provision_local(SERVING_VERSION, GO_MODULE_VERSION, apps=["nope"])


def test_inputs_hash_is_stable_and_sensitive():
    assert images.inputs_hash("a", 1, b"x") == images.inputs_hash("a", 1, b"x")
    assert images.inputs_hash("a", 1, b"x") != images.inputs_hash("a", 1, b"y")


# --- real Docker -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    if not docker_engine.engine_answers():
        pytest.skip("no Docker engine answers here (start dockerd, or call ensure_engine())")
    c = docker_engine.docker_client()
    yield c
    leftovers = c.containers.list(all=True, filters={"label": TEST_LABEL})
    for container in leftovers:
        container.remove(force=True)
    c.close()
    assert not leftovers, f"containers left behind: {[x.name for x in leftovers]}"


@pytest.fixture(scope="module")
def provisioned(client) -> images.ProvisionResult:
    return images.provision_local(SERVING_VERSION, GO_MODULE_VERSION)


@contextlib.contextmanager
def run(client: docker.DockerClient, image: str, **kwargs) -> Iterator[Container]:
    """A container labelled for sweeping, force-removed whatever happens."""
    container = client.containers.create(
        image, name=f"kd-test-{uuid.uuid4().hex[:8]}", labels={TEST_LABEL: "images"}, **kwargs
    )
    try:
        container.start()
        container.reload()
        yield container
    finally:
        container.remove(force=True)


def host_port(container: Container, port: int) -> int:
    binding = container.ports[f"{port}/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    return int(binding["HostPort"])


@dataclass
class Answer:
    status: int | None
    body: str
    headers: dict[str, str]
    seconds: float
    error: str | None = None


def get(port: int, path: str, timeout: float = 30.0) -> Answer:
    """One GET to 127.0.0.1; a transport failure is recorded, not raised (never retried)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, body, headers, time.monotonic() - started)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, "", {}, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def wait_healthy(port: int, path: str = "/healthz", within_s: float = 30.0) -> None:
    @retry(stop=stop_after_delay(within_s), wait=wait_fixed(0.2), reraise=True)
    def poll() -> None:
        answer = get(port, path, timeout=2)
        assert answer.status == 200, answer

    poll()


def app_container(client, provisioned, app: str, pod: str, **env: str):
    environment = {"PORT": "8081", "POD_NAME": pod, "K_REVISION": f"{app}-00001", **env}
    return run(
        client,
        provisioned.app_images[app],
        environment=environment,
        ports={"8081/tcp": ("127.0.0.1", None)},
    )


@pytest.mark.slow
def test_second_provision_is_a_no_op(client, provisioned):
    lines: list[str] = []
    started = time.monotonic()
    again = images.provision_local(SERVING_VERSION, GO_MODULE_VERSION, progress=lines.append)
    assert again.all_cached, lines
    assert time.monotonic() - started < 15, lines
    assert again.base.image_id == provisioned.base.image_id
    assert again.queue_proxy.image_id == provisioned.queue_proxy.image_id
    assert {n: o.image_id for n, o in again.apps.items()} == {
        n: o.image_id for n, o in provisioned.apps.items()
    }
    assert any("cached" in line for line in lines) and lines[-1].startswith("local platform")
    qp = client.images.get(again.queue_proxy_image)
    assert qp.labels["knative-drain.serving-version"] == SERVING_VERSION
    assert qp.labels["knative-drain.go-module-version"] == GO_MODULE_VERSION
    assert qp.labels["knative-drain.source"] in {"pulled", "built"}
    if qp.labels["knative-drain.source"] == "built":
        assert qp.labels["knative-drain.go-version"].startswith("go1.")
        assert qp.attrs["Config"]["Entrypoint"] == ["/ko-app/queue"]
    assert again.describe()["queue_proxy_source"] == qp.labels["knative-drain.source"]


@pytest.mark.slow
def test_an_app_is_rebuilt_when_its_files_change(client, provisioned, tmp_path, monkeypatch):
    apps = tmp_path / "apps"
    shutil.copytree(images.apps_dir() / "python-gunicorn-exec", apps / "kd-cache-probe")
    shutil.copytree(images.apps_dir() / images.SHARED_SOURCES, apps / images.SHARED_SOURCES)
    monkeypatch.setenv("KNATIVE_DRAIN_APPS_DIR", str(apps))
    made: list[str] = []
    try:
        first = images.ensure_app_image(client, "kd-cache-probe")
        made.append(first.image_id)
        second = images.ensure_app_image(client, "kd-cache-probe")
        assert not first.cached and second.cached and second.image_id == first.image_id
        with (apps / images.SHARED_SOURCES / "python" / "app.py").open("a") as f:
            f.write("# changed\n")
        third = images.ensure_app_image(client, "kd-cache-probe")
        made.append(third.image_id)
        assert not third.cached and third.image_id != first.image_id
        assert third.labels[images.LABEL_INPUTS] != first.labels[images.LABEL_INPUTS]
    finally:
        for image_id in made:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(image_id, force=True)


@pytest.mark.slow
def test_the_default_timeout_app_keeps_gunicorns_default_and_the_shell_app_is_shell_form(
    client, provisioned
):
    def config(app: str) -> dict:
        return client.images.get(provisioned.app_images[app]).attrs["Config"]

    assert "GRACEFUL_TIMEOUT=600" in config("python-gunicorn-exec")["Env"]
    assert not any(
        e.startswith("GRACEFUL_TIMEOUT=") for e in config("python-gunicorn-default-timeout")["Env"]
    )
    # exec-form: /app/serve execs gunicorn (or the gRPC form), so the server is PID 1
    assert config("python-gunicorn-exec")["Cmd"] == ["/app/serve"]
    serve = (images.apps_dir() / "_src" / "python" / "serve").read_text().splitlines()
    assert [line.split()[0] for line in serve if line.strip().startswith("exec")] == ["exec"] * 2
    assert config("python-gunicorn-shell")["Cmd"][:2] == ["/bin/sh", "-c"]


@pytest.mark.slow
@pytest.mark.parametrize("app", APPS)
def test_app_answers_the_contract(client, provisioned, app):
    pod = f"pod-{app}"
    with app_container(client, provisioned, app, pod) as container:
        port = host_port(container, 8081)  # proves PORT is honoured
        wait_healthy(port)
        health = get(port, "/healthz")
        assert (health.status, health.headers["x-pod-name"]) == (200, pod)
        assert health.seconds < 1.0
        answer = get(port, "/?sleep=400")
        assert answer.status == 200, answer
        assert answer.body == f"slept 400 ms on {pod}\n"
        assert answer.headers["x-pod-name"] == pod
        assert answer.headers["x-revision-name"] == f"{app}-00001"
        assert 0.4 <= answer.seconds < 2.0
        assert get(port, "/?sleep=soon").status == 400
        assert get(port, "/nowhere").status == 404
        # a liveness probe made to fail (container-restart on a cluster): for every worker
        failing = get(port, "/fail-liveness")
        assert (failing.status, failing.body) == (200, f"liveness fails from now on {pod}\n")
        assert {get(port, "/healthz").status for _ in range(6)} == {503}
        assert get(port, "/?sleep=0").status == 200  # it still serves


@dataclass(frozen=True)
class StopCase:
    app: str
    grace: int
    drains: bool  # the in-flight 6 s request completes with 200
    stop_min_s: float
    stop_max_s: float
    env: tuple[tuple[str, str], ...] = ()


STOP_CASES = [
    # Drains: the request ends at ~6 s (sent ~1 s before the stop), the app exits after it.
    StopCase("python-gunicorn-exec", grace=20, drains=True, stop_min_s=4.0, stop_max_s=9.0),
    # sh is PID 1 and ignores SIGTERM: the whole grace passes, then SIGKILL cuts the request.
    StopCase("python-gunicorn-shell", grace=4, drains=False, stop_min_s=3.8, stop_max_s=7.0),
    # gunicorn's graceful timeout (here 2 s via env, 30 s in the image) ends before the request.
    StopCase(
        "python-gunicorn-default-timeout",
        grace=20,
        drains=False,
        stop_min_s=1.5,
        stop_max_s=4.5,
        env=(("GRACEFUL_TIMEOUT", "2"),),
    ),
    StopCase("go-shutdown", grace=20, drains=True, stop_min_s=4.0, stop_max_s=9.0),
    StopCase("go-exit", grace=20, drains=False, stop_min_s=0.0, stop_max_s=2.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", STOP_CASES, ids=lambda c: c.app)
def test_sigterm_behaviour_with_a_request_in_flight(client, provisioned, case):
    pod = f"pod-{case.app}"
    with app_container(client, provisioned, case.app, pod, **dict(case.env)) as container:
        port = host_port(container, 8081)
        wait_healthy(port)
        result: list[Answer] = []
        request = threading.Thread(target=lambda: result.append(get(port, "/?sleep=6000")))
        request.start()
        time.sleep(1.0)  # the request is in the app's sleep now
        assert request.is_alive() and not result
        stopped_at = time.monotonic()
        container.stop(timeout=case.grace)  # SIGTERM, grace, SIGKILL
        stop_took = time.monotonic() - stopped_at
        request.join(timeout=30)
        container.reload()
        logs = container.logs().decode(errors="replace")[-1500:]
    assert not request.is_alive()
    answer = result[0]
    if case.drains:
        assert answer.status == 200, (answer, logs)
        assert answer.body == f"slept 6000 ms on {pod}\n"
        assert container.attrs["State"]["ExitCode"] == 0, logs  # exited by itself
    else:
        assert answer.status is None and answer.error, (answer, logs)
    assert case.stop_min_s <= stop_took <= case.stop_max_s, (stop_took, answer, logs)


QUEUE_PROXY_ENV = {
    "CONTAINER_CONCURRENCY": "0",
    "QUEUE_SERVING_PORT": "8012",
    "QUEUE_SERVING_TLS_PORT": "8112",
    "USER_PORT": "8080",
    "REVISION_TIMEOUT_SECONDS": "300",
    "SERVING_LOGGING_CONFIG": "",
    "SERVING_LOGGING_LEVEL": "info",
    "SERVING_NAMESPACE": "knative-drain",
    "SERVING_CONFIGURATION": "qp-test",
    "SERVING_REVISION": "qp-test-00001",
    "SERVING_POD": "pod-qp",
    "SERVING_POD_IP": "",
    "SERVING_READINESS_PROBE": "",
}


@pytest.mark.slow
def test_queue_proxy_proxies_to_the_app_in_its_network_namespace(client, provisioned):
    app_ports = {"8012/tcp": ("127.0.0.1", None), "8022/tcp": ("127.0.0.1", None)}
    env = {"POD_NAME": "pod-qp", "K_REVISION": "qp-test-00001"}
    with (
        run(client, provisioned.app_images["go-shutdown"], environment=env, ports=app_ports) as app,
        run(
            client,
            provisioned.queue_proxy_image,
            network_mode=f"container:{app.id}",
            environment=QUEUE_PROXY_ENV,
        ) as qp,
    ):
        serving, admin = host_port(app, 8012), host_port(app, 8022)
        try:
            wait_healthy(serving, "/?sleep=0")
        except AssertionError:
            pytest.fail(f"queue-proxy never proxied; its log: {qp.logs()[-1500:]!r}")
        answer = get(serving, "/?sleep=500")
        assert answer.status == 200, answer
        assert answer.body == "slept 500 ms on pod-qp\n"
        assert answer.headers["x-pod-name"] == "pod-qp"
        assert 0.5 <= answer.seconds < 3.0
        # Without SIGTERM the drain handler resets after 1 s and answers 200 (handlers.go).
        drain = get(admin, "/wait-for-drain", timeout=15)
        assert drain.status == 200, drain
        assert 0.9 <= drain.seconds < 5.0, drain
        assert b"Attached drain handler from user-container" in qp.logs()


def test_fixture_apps_are_tagged_for_a_registry_and_a_failed_push_names_it(client, provisioned):
    """push-apps for --platform=existing; the "registry" is a closed loopback port."""
    refs = images.cluster_app_refs("127.0.0.1:1/drain-test/", ["go-exit"])
    assert refs == {"go-exit": "127.0.0.1:1/drain-test/knative-drain-app:go-exit"}
    images.tag_fixture_apps(client, refs, progress=lambda _: None)
    try:
        tagged = client.images.get(refs["go-exit"])
        assert tagged.id == client.images.get(f"{images.APP_REPO}:go-exit").id
        with pytest.raises(images.ImagesError, match=r"docker push 127\.0\.0\.1:1/drain-test/"):
            images.push_images(client, [refs["go-exit"]], progress=lambda _: None)
    finally:
        client.images.remove(refs["go-exit"])
