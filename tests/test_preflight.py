"""An --app-image that cannot be measured ends the session once, before any case runs.

Real images built from the local base image: one that exits at once, one that serves
something else, one without a command, and one that does not exist. Each must give one
line naming --app-image with what the container did (exit code, log tail), exit code 4,
no test run, and no container left.
"""

from __future__ import annotations

import json
import sys
import textwrap

import bad_images
import docker
import pytest

from pytest_knative_drain.builders.images import BASE_IMAGE

pytestmark = pytest.mark.slow

DOCKERFILES = {
    "exits": bad_images.EXITS,
    "wrong-body": bad_images.WRONG_BODY,
    "no-cmd": "LABEL knative-drain.test=no-command",  # the base image has no CMD
    # serves GET /?sleep=<ms> and nothing else: every path gets "slept 0 ms on x"; exits on SIGTERM
    "no-stream": "\n".join(
        [
            "RUN printf '%s\\n' 'import http.server as h, signal, sys'"
            " 'signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))'"
            " 'class H(h.BaseHTTPRequestHandler):'"
            " '    def do_GET(self):' '        b = b\"slept 0 ms on x\\n\"'"
            " '        self.send_response(200)'"
            " '        self.send_header(\"Content-Length\", str(len(b)))'"
            " '        self.end_headers()' '        self.wfile.write(b)'"
            " 'h.ThreadingHTTPServer((\"\", 8080), H).serve_forever()' > /srv-app.py",
            'CMD ["python3", "/srv-app.py"]',
        ]
    ),
}
INNER = """
    import pytest

    pytestmark = pytest.mark.drain_family("pod_delete")


    def test_pod_delete(drain, drain_case):
        drain.check(drain.run(drain_case))
"""


@pytest.fixture(scope="module")
def images():
    try:
        docker.from_env().images.get(BASE_IMAGE)
    except docker.errors.DockerException as exc:
        pytest.skip(f"no {BASE_IMAGE} to build the test images from: {exc}")
    with bad_images.built("knative-drain-test/preflight", DOCKERFILES) as tags:
        yield {**tags, "missing": f"{tags['exits'].rsplit(':', 1)[0]}:missing"}


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("exits", ("user-container exited before the pod became ready: exit code 3", "going away")),
        ("wrong-body", ("answered 200 '<!DOCTYPE HTML>", "not 200 'slept 0 ms on <pod>'")),
        ("no-cmd", ("Docker cannot create a container of", "No command specified")),
        ("missing", ("is not on this Docker engine",)),
        (
            "no-stream",
            (
                "GET /stream?duration=1000&interval=250 through queue-proxy answered 200, "
                "last line 'slept 0 ms on x', not a chunked body ending 'stream complete: ...'",
                "or deselect the scenarios that use it",
                "! _pytest.outcomes.Exit: --app-strict: --app-image=",
            ),
        ),
    ],
)
def test_an_unusable_app_image_ends_the_session_once(pytester, images, image, says):
    pytester.makepyfile(test_inner=textwrap.dedent(INNER))
    ref = images[image]
    proc = pytester.popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--platform=local",
            "--knative-version=1.14",
            f"--app-image={ref}",
            # an image that serves GET /?sleep= only is refused under --app-strict (a
            # certification run); without it see test_an_image_is_judged_on_what_it_serves
            *(["--app-strict"] if image == "no-stream" else []),
        ],
        stdin=None,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode() + err.decode()
    left = docker.from_env().containers.list(
        all=True, filters={"label": f"knative-drain.owner-pid={proc.pid}"}
    )
    assert [c.name for c in left] == [], text
    assert proc.returncode == 4, text
    lines = [line for line in text.splitlines() if f"--app-image={ref}: " in line]
    assert len(lines) == 1, text  # said once, not once per case
    assert lines[0].startswith("! _pytest.outcomes.Exit: "), text
    for part in says:
        assert part in lines[0], lines[0]
    assert "no tests ran" in text, text  # before any case
    assert "Traceback" not in text, text


def test_an_image_is_judged_on_what_it_serves(pytester, images):
    """Without --app-strict, an image that serves the sleep contract but no /stream runs its
    HTTP scenarios and skips the streaming ones, each saying why (issue 20, item 6)."""
    pytester.makepyfile(test_inner=textwrap.dedent(INNER))
    ref = images["no-stream"]
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--platform=local",
        "--knative-version=1.14",
        f"--app-image={ref}",
        "-k",
        "(pod-delete-short or streaming-long) and not internal-tls and not activator",
        "-rs",
        "--drain-report=run.json",
        timeout=600,
    )
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, text
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1, text  # pod-delete-short: answered at once
    assert outcomes.get("skipped", 0) >= 3, text  # streaming-long and its configs
    said = json.loads((pytester.path / "run.json").read_text())["environment"]["preflight"]
    assert said.startswith("custom served GET /?sleep=0 through queue-proxy"), said
    assert "not served, their scenarios skipped (--app-strict refuses such an image)" in said
    skips = [line for line in text.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(
        "the --app-image does not serve GET /stream" in line and "streaming-long" in line
        for line in skips
    ), skips
    assert "Traceback" not in text
