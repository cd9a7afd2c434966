"""Bad input is caught when pytest configures: one line naming the option, exit 4, no platform.

Every option and ini key in ``options.OPTIONS`` gets a bad value here, on the command line
and in the ini file: an option added without a bad-value case fails
``test_every_option_and_ini_key_rejects_a_bad_value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_knative_drain import options as opts
from pytest_knative_drain.builders.image_reference import check_image_reference

#: Stands in for the plugin's session platform in these inner sessions: if a bad value ever got
#: past configure, this records that a platform would have come up, and nothing is started.
TRIPWIRE = """
import pytest

@pytest.fixture(scope="session")
def drain_platform():
    open("PLATFORM_CAME_UP", "w").close()
    pytest.fail("a platform would have come up")
"""

KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: ctx-a
contexts:
- {name: ctx-a, context: {cluster: c, user: u}}
- {name: ctx-b, context: {cluster: c, user: u}}
clusters:
- {name: c, cluster: {server: "https://127.0.0.1:9"}}
users:
- {name: u, user: {token: t}}
"""


@dataclass(frozen=True)
class Bad:
    value: str
    says: tuple[str, ...]  # what the error line says besides the option's name
    args: tuple[str, ...] = ("--platform=local",)
    switch: bool = False  # a store_true flag: argparse itself rejects "--flag=value"


BAD: dict[str, Bad] = {
    "knative_version": Bad("0.9", ("1.10", "1.23")),
    "platform": Bad("minikube", ("kind, existing, local",), args=()),
    "context": Bad(
        "nowhere", ("no such context", "ctx-a, ctx-b"), ("--platform=existing", "--kubeconfig=kc")
    ),
    "profile": Bad("long", ("quick, seed",)),
    "app_image": Bad("me/MyApp:1", ("lowercase", "registry.example.com/team/app:1")),
    "app_strict": Bad("maybe", ("true or false",), switch=True),
    "drain_report": Bad("test_needs_platform.py/sub/run.json", ("is a file",)),
    "drain_bundle": Bad("test_needs_platform.py", ("is a file; give a directory path",)),
    "product": Bad("kc", ("fields missing or empty: vendor, name",), ("--drain-bundle=b",)),
    "allow_cluster_config": Bad("maybe", ("true or false",), switch=True),
    "knative_manifests_dir": Bad("no-such-dir", ("serving-crds.yaml", "kourier.yaml")),
    "ingress_port": Bad("80x", ("1 to 65535",)),
    "ingress_url": Bad(
        "https://kourier.example.com",
        ("http://HOST[:PORT]", "https is not supported"),
        ("--platform=existing", "--kubeconfig=kc"),
    ),
    "app_registry": Bad(
        "https://reg.example.com", ("no scheme",), ("--platform=existing", "--kubeconfig=kc")
    ),
    "kind_build": Bad("bogus", ("auto, release, here",)),
    "drain_concurrency": Bad("0", ("a whole number >= 1", "auto")),
    "kubernetes_version": Bad(
        "1.31",
        ("Knative 1.23.0 needs Kubernetes >= 1.34",),
        ("--platform=kind", "--knative-version=1.23"),
    ),
    "kind_workers": Bad("9", ("0 to 4",), ("--platform=kind",)),
    "kubeconfig": Bad("no-such-kubeconfig", ("no such file",), ("--platform=existing",)),
    "keep_cluster": Bad("maybe", ("true or false",), switch=True),
}

REGISTERED = [dest for dest, *_ in opts.OPTIONS]


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(TRIPWIRE)
    pytester.makepyfile(test_needs_platform="def test_run(drain_platform): pass")
    pytester.path.joinpath("kc").write_text(KUBECONFIG)
    return pytester


def _assert_usage_error(result: pytest.RunResult, path: Path, flag: str, says: tuple) -> str:
    """Exit 4, exactly one line naming ``flag`` and saying ``says``, no traceback, no platform."""
    err, out = result.stderr.str(), result.stdout.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, (result.ret, out, err)
    lines = [line for line in err.splitlines() if flag in line]
    assert len(lines) == 1, err
    for text in says:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in err + out and "INTERNALERROR" not in err + out
    assert not (path / "PLATFORM_CAME_UP").exists()
    assert "local platform ready" not in out
    return lines[0]


@pytest.mark.parametrize("where", ["cli", "ini"])
@pytest.mark.parametrize("dest", REGISTERED)
def test_every_option_and_ini_key_rejects_a_bad_value(
    inner: pytest.Pytester, dest: str, where: str
) -> None:
    if dest not in BAD:
        pytest.fail(f"option {dest!r} has no bad-value case: add one to BAD")
    bad = BAD[dest]
    flag = opts.flag_of(dest)
    if where == "cli":
        value = "yes" if bad.switch else bad.value
        says = ("ignored explicit argument 'yes'",) if bad.switch else bad.says
        result = inner.runpytest(*bad.args, f"{flag}={value}")
    else:
        inner.makeini(f"[pytest]\n{dest} = {bad.value}\n")
        says = (f"ini key '{dest}'", *bad.says) if bad.switch else bad.says
        result = inner.runpytest(*bad.args)
    _assert_usage_error(result, inner.path, flag, says)


def test_bad_value_table_names_only_registered_options() -> None:
    assert sorted(BAD) == sorted(REGISTERED)


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["--drain-report=."], "--drain-report", ("is a directory",)),
        (["--drain-report=out/run.md"], "--drain-report", ("give the JSON path",)),
        (["--junitxml=test_needs_platform.py/j.xml"], "--junitxml", ("is a file",)),
        (["--alluredir=test_needs_platform.py/allure"], "--alluredir", ("is a file",)),
        (["--alluredir=test_needs_platform.py"], "--alluredir", ("give a directory path",)),
        (
            ["--platform=kind", "--kubeconfig=test_needs_platform.py/kc"],
            "--kubeconfig",
            ("is a file",),
        ),
        (
            ["--platform=existing", "--kubeconfig=test_needs_platform.py"],
            "--kubeconfig",
            ("not a readable kubeconfig",),
        ),
        (
            ["--platform=existing", "--kubeconfig=kc", "--context=ctx-c"],
            "--context=ctx-c",
            ("contexts there: ctx-a, ctx-b",),
        ),
    ],
)
def test_report_paths_and_cluster_access_are_checked_up_front(
    inner: pytest.Pytester, args: list[str], flag: str, says: tuple
) -> None:
    _assert_usage_error(inner.runpytest(*args), inner.path, flag, says)


def test_a_kubeconfig_without_a_current_context_needs_context(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner.path.joinpath("kc2").write_text(KUBECONFIG.replace("current-context: ctx-a\n", ""))
    line = _assert_usage_error(
        inner.runpytest("--platform=existing", "--kubeconfig=kc2"),
        inner.path,
        "--kubeconfig=kc2",
        ("no usable current-context", "give --context, one of: ctx-a, ctx-b"),
    )
    assert "Invalid kube-config" not in line
    # the default kubeconfig is $KUBECONFIG, as the kubernetes client reads it
    monkeypatch.setenv("KUBECONFIG", str(inner.path / "missing"))
    _assert_usage_error(
        inner.runpytest("--platform=existing"), inner.path, "--platform=existing", ("no such file",)
    )
    monkeypatch.setenv("KUBECONFIG", str(inner.path / "kc2"))
    result = inner.runpytest("--platform=existing", "--context=ctx-b", "--collect-only")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


def test_an_incomplete_manifests_dir_names_what_is_missing(inner: pytest.Pytester) -> None:
    manifests = inner.mkdir("manifests")
    (manifests / "serving-crds.yaml").write_text("")
    _assert_usage_error(
        inner.runpytest("--platform=local", "--knative-manifests-dir=manifests"),
        inner.path,
        "--knative-manifests-dir",
        ("serving-core.yaml, kourier.yaml missing",),
    )


def test_app_strict_needs_an_app_image(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--platform=local", "--app-strict")
    line = _assert_usage_error(result, inner.path, "--app-strict", ("give --app-image=IMAGE",))
    assert "fixture apps always serve every endpoint" in line


def test_good_values_pass_configure(inner: pytest.Pytester) -> None:
    """Paths that do not exist yet but can be made, a kubeconfig context, an image reference."""
    manifests = inner.mkdir("manifests")
    for name in ("serving-crds", "serving-core", "kourier"):
        (manifests / f"{name}.yaml").write_text("")
    result = inner.runpytest(
        "--collect-only",
        "--platform=existing",
        "--kubeconfig=kc",
        "--context=ctx-b",
        "--app-image=localhost:5000/team/app-1:v1.2",
        "--app-strict",
        "--drain-report=new/deeper/run.json",
        "--junitxml=new/junit/j.xml",
        "--alluredir=new/allure",
        "--knative-manifests-dir=manifests",
        "--app-registry=reg.example.com:5000/team/",
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert not (inner.path / "PLATFORM_CAME_UP").exists()


@pytest.mark.parametrize(
    "reference",
    [
        "app",
        "me/app:1",
        "docker.io/library/debian:bookworm",
        "localhost:5000/a/b_c/d__e/f-g:1.0-rc_1",
        "Registry.Example.COM:443/team/app",
        "[::1]:5000/app:latest",
        "app@sha256:" + "a" * 64,
        "reg.example.com/app:1@sha256:" + "0f" * 32,
        "dev.local/knative-drain-app:go-exit",
    ],
)
def test_image_references_docker_accepts(reference: str) -> None:
    assert check_image_reference(reference) == reference


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "me/MyApp:1",
        "app:",
        "app:-tag",
        "https://reg.example.com/app:1",
        "reg.example.com//app",
        "app/",
        "my app:1",
        "app@sha256:abc",
        "app:" + "t" * 129,
        "a" * 256,
        "-app",
    ],
)
def test_image_references_docker_rejects(reference: str) -> None:
    with pytest.raises(ValueError, match="lowercase name"):
        check_image_reference(reference)
