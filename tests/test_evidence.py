"""Evidence through the plugin (pytester): drain report, allure results, JUnit XML, markers.

The inner test session records scenario results built from real requests against
real loopback servers (``test_report.make_result``), exactly as ``Drain.run`` does:
``config.stash[REPORT_KEY].add(result)`` inside the test, then fail unless the
outcome matches the app's expectation.
"""

from __future__ import annotations

import json
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.backends.backend_agg  # noqa: F401  (see below)
import matplotlib.collections  # noqa: F401
import matplotlib.figure  # noqa: F401
import pytest

from pytest_knative_drain.evidence.allure import CATEGORIES
from pytest_knative_drain.knative import catalog
from pytest_knative_drain.matrix.apps import APPS
from pytest_knative_drain.matrix.cases import cases, families

# The inner sessions run in this process; pytester drops modules first imported there, and
# numpy refuses a second import. Importing matplotlib here keeps it loaded across sessions.
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VERSION = catalog.resolve("1.14").version

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import pytest
from test_report import make_result
from pytest_knative_drain import plugin
from pytest_knative_drain.run.runner import expectation_problem


@pytest.fixture
def record(pytestconfig):
    def run(app, failing=None, **kw):
        result = make_result(app, failing, **kw)
        pytestconfig.stash[plugin.REPORT_KEY].add(result)
        problem = expectation_problem(result)
        if problem:
            pytest.fail(problem, pytrace=False)
    return run
"""

TESTS_PY = """
def test_good(record):
    record("python-gunicorn-exec")

def test_dropped(record):
    record("go-shutdown", "bad_gateway",
           logs={"user-container": "exiting at once", "queue-proxy": "error reverse proxying"})

def test_control(record):
    record("go-exit", "bad_gateway", expected={"queue-proxy"})
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_drain=TESTS_PY)
    return pytester


def test_drain_report_and_terminal_rows(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--platform=local", "--drain-report=out/run.json")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "knative drain verdicts" in out and "took s" in out
    rows = [line for line in out.splitlines() if line.startswith("pod-delete-long ")]
    assert len(rows) == 3, out
    data = json.loads((suite.path / "out/run.json").read_text())
    assert data["verdict"] == "fail" and data["knative"]["version"] == VERSION
    assert [(s["app"], s["expectation_met"]) for s in data["scenarios"]] == [
        ("python-gunicorn-exec", True),
        ("go-shutdown", False),
        ("go-exit", True),
    ]
    dropped = data["scenarios"][1]
    assert dropped["counts"]["signatures"] == {"queue-proxy": 8}
    assert dropped["logs"]["queue-proxy"] == "error reverse proxying"
    md = (suite.path / "out/run.md").read_text()
    assert "### pod-delete-long / go-shutdown" in md and "Pod timeline" in md


#: runs after test_drain.py: what happens to the evidence paths while a long run goes on
VANDAL = """
import os
import shutil
import tempfile
from pathlib import Path


def test_vandal(record):
    shutil.rmtree("out")  # the report's directory, gone during the run
    {actions}
    record("python-gunicorn-exec")
"""

VANDALS = {
    "dir_removed": "",
    "dir_replaced_by_file": 'Path("out").write_text("a file now")',
    # nothing can be written where the report goes, nor in the temp dir (the fallback, and
    # where allure's timeline picture is drawn), and environment.properties is a directory
    "nowhere": "; ".join(
        [
            'Path("out").write_text("a file now")',
            'tempfile.tempdir = os.path.abspath("out/tmp")',
            'os.mkdir("allure/environment.properties")',
        ]
    ),
}


@pytest.mark.parametrize("vandal", list(VANDALS))
def test_evidence_writers_survive_what_happens_to_their_paths(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, vandal: str
) -> None:
    """Each writer on its own: one that fails says so in one line, the others still write."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))  # restored after the test
    suite.mkdir("out")
    suite.makepyfile(test_vandal=VANDAL.format(actions=VANDALS[vandal]))
    evidence = ("--drain-report=out/run.json", "--junitxml=junit.xml", "--alluredir=allure")
    result = suite.runpytest("--platform=local", *evidence)
    result.assert_outcomes(passed=3, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the tests' verdict, not an internal error
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out
    lines = out.splitlines()

    def said(text: str) -> list[str]:
        return [line for line in lines if text in line]

    # the writers that nothing happened to wrote everything
    assert len([line for line in lines if line.startswith("pod-delete-long ")]) == 4
    testsuite = ET.parse(suite.path / "junit.xml").getroot().find("testsuite")
    assert testsuite is not None
    props = {p.get("name"): p.get("value") for p in testsuite.findall("./properties/property")}
    assert props["drain.platform"] == "local"
    assert json.loads((suite.path / "allure/categories.json").read_text())
    assert _allure_results(suite.path / "allure")["test_vandal"]["status"] == "passed"
    if vandal == "dir_removed":  # made again at the end
        assert len(json.loads((suite.path / "out/run.json").read_text())["scenarios"]) == 4
        assert len(said("drain report: ")) == 1 and not said("not written")
    elif vandal == "dir_replaced_by_file":  # the JSON lands in the temp dir, one line says where
        (json_line,) = said("/out/run.json (")
        assert json_line.startswith(f"drain report: cannot write {suite.path / 'out/run.json'} (")
        fallback = Path(json_line.rsplit("written to ", 1)[1].removesuffix(" instead"))
        assert fallback.parent == system_tmp and fallback.suffix == ".json"
        assert len(json.loads(fallback.read_text())["scenarios"]) == 4
        assert len(said(f"written to {fallback.with_suffix('.md')} instead")) == 1
        assert (suite.path / "allure/environment.properties").is_file()
    else:
        assert len(said("drain report LOST: cannot write ")) == 2  # JSON and markdown
        assert not list(system_tmp.glob("knative-drain-report-*"))
        (allure_env,) = said("allure environment.properties not written")
        assert allure_env.startswith("knative-drain: ") and "IsADirectoryError" in allure_env
        (attachments,) = said("allure attachments of test_vandal.py::test_vandal")
        assert "not written: " in attachments and "Error" in attachments
        # the other tests' attachments were written before: one writer's failure is its own
        assert _allure_results(suite.path / "allure")["test_good"]["attachments"]


def _allure_results(directory: Path) -> dict[str, dict]:
    results = {}
    for path in directory.glob("*-result.json"):
        data = json.loads(path.read_text())
        results[data["name"]] = data
    return results


def test_allure_evidence_per_scenario_and_session_files(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--platform=local", "--alluredir=allure")
    result.assert_outcomes(passed=2, failed=1)
    directory = suite.path / "allure"
    props = dict(
        line.split("=", 1)
        for line in (directory / "environment.properties").read_text().splitlines()
    )
    assert props["knative.version"] == VERSION
    assert props["kubernetes.version"] == "none" and props["ingress"] == "none"
    assert props["platform"] == "local" and props["kind.version"] == "none"
    assert props["client.pytest"] == pytest.__version__
    assert props["client.allure-pytest"][0].isdigit()
    categories = json.loads((directory / "categories.json").read_text())
    assert [c["name"] for c in categories] == [c["name"] for c in CATEGORIES]

    results = _allure_results(directory)
    assert set(results) == {"test_good", "test_dropped", "test_control"}
    for name, data in results.items():
        attachments = {a["name"]: a for a in data.get("attachments", [])}
        requests = [a for n, a in attachments.items() if n.startswith("requests ")]
        assert len(requests) == 1, (name, list(attachments))  # one file, not one per request
        doc = json.loads((directory / requests[0]["source"]).read_text())
        assert len(doc["records"]) in (8, 16) and {"class", "signature"} <= set(doc["records"][0])
        pngs = [a for a in attachments.values() if a["type"] == "image/png"]
        assert len(pngs) == 1
        assert (directory / pngs[0]["source"]).read_bytes()[:8] == PNG_MAGIC
        events = next(a for n, a in attachments.items() if n.startswith("pod events "))
        assert "SIGTERM user-container" in (directory / events["source"]).read_text()
        params = {p["name"]: p["value"] for p in data["parameters"]}
        assert params["scenario"] == "'pod-delete-long'" and params["platform"] == "'local'"
        assert params["knative"] == f"'{VERSION}'" and params["profile"] == "'quick'"
        logs = [n for n in attachments if n.startswith("log ")]
        assert logs == (["log queue-proxy", "log user-container"] if name == "test_dropped" else [])
    # the failure message lands in the queue-proxy category (allure: first full match wins)
    message = results["test_dropped"]["statusDetails"]["message"]
    matching = [
        c["name"]
        for c in CATEGORIES
        if "messageRegex" in c and re.fullmatch(c["messageRegex"], message)
    ]
    assert matching and matching[0].startswith("queue-proxy 502s"), message


def test_no_allure_files_without_alluredir(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--platform=local")
    result.assert_outcomes(passed=2, failed=1)
    written = [p.name for p in suite.path.rglob("*") if p.is_file()]
    assert not [n for n in written if n.endswith(("-result.json", "-attachment.png"))]
    assert "environment.properties" not in written and "categories.json" not in written


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_junit_properties_without_warnings(suite: pytest.Pytester, family: str) -> None:
    result = suite.runpytest(
        "--platform=local", "--junitxml=junit.xml", "-o", f"junit_family={family}"
    )
    result.assert_outcomes(passed=2, failed=1)  # no "warnings" outcome
    assert "PytestWarning" not in result.stdout.str()
    root = ET.parse(suite.path / "junit.xml").getroot()
    testsuite = root.find("testsuite")
    assert testsuite is not None
    suite_props = {
        p.get("name"): p.get("value") for p in testsuite.findall("./properties/property")
    }
    assert suite_props["drain.knative_version"] == VERSION
    assert suite_props["drain.platform"] == "local"
    assert suite_props["drain.kubernetes_version"] == "none"
    assert suite_props["drain.ingress"] == "none"
    cases = {c.get("name"): c for c in testsuite.findall("testcase")}
    case_props = {
        name: {p.get("name"): p.get("value") for p in case.findall("./properties/property")}
        for name, case in cases.items()
    }
    if family == "xunit1":
        assert case_props["test_dropped"]["drain.pod-delete-long.strict_sli"] == "0.5000"
        assert case_props["test_good"]["drain.pod-delete-long.requests_ok"] == "8/8"
        assert case_props["test_control"]["drain.pod-delete-long.expected"] == "caught"
    else:  # testcase <properties> are not valid xunit2: per-test SLIs go to the suite
        assert case_props == {name: {} for name in cases}
        assert suite_props["drain.test_dropped.pod-delete-long.strict_sli"] == "0.5000"
        assert suite_props["drain.test_good.pod-delete-long.strict_sli"] == "1.0000"


def _collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest(
        str(ROOT / "conformance"), "--collect-only", "-q", "--platform=local", *args
    )
    return [line for line in result.stdout.lines if "::" in line]


def test_conformance_markers_and_keywords(pytester: pytest.Pytester) -> None:
    every = _collected(pytester)
    matrix = [c.id for family in families() for c in cases(family, list(APPS))]
    assert sorted(i.split("[", 1)[1].rstrip("]") for i in every) == sorted(matrix)
    # one module per trigger family
    assert {i.split("::")[0].rsplit("/", 1)[-1] for i in every} == {
        f"test_{family}.py" for family in families()
    }
    underscore = _collected(pytester, "-k", "pod_delete_long")
    dashed = _collected(pytester, "-k", "pod-delete-long")
    assert underscore == dashed == [i for i in every if "[pod-delete-long-" in i]
    # every app under the default config, plus the config variants
    variants = ("short-timeout", "activator", "internal-tls")
    assert len([i for i in underscore if not any(v in i for v in variants)]) == len(APPS)
    assert len([i for i in underscore if "internal-tls" in i]) == len(APPS)
    fast = _collected(pytester, "-m", "not slow")
    # not slow: scenarios whose requests end inside queue-proxy's 30 s quiet period, plain
    # and under internal TLS
    assert fast and all("pod-delete-short" in i or "deletion-timeliness" in i for i in fast)
    assert len(fast) == 2 * 2 * len(APPS)
    one = _collected(
        pytester, "-k", "pod_delete_long and go_exit and not activator_in_path and not internal_tls"
    )
    assert one == [i for i in every if i.endswith("[pod-delete-long-go-exit]")]
    twin = _collected(pytester, "-k", "short_timeout")
    short = ("[pod-delete-long-short-timeout-", "[grpc-unary-long-short-timeout-")
    assert twin == [i for i in every if any(s in i for s in short)] and len(twin) == 2 * len(
        [a for a in APPS.values() if a.must_pass_everywhere]
    )


def test_cluster_only_cases_are_skipped_on_local_with_the_reason(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        str(ROOT / "conformance"), "--platform=local", "-rs", "-k", "rollout or activator_in_path"
    )
    from pytest_knative_drain.matrix.configs import CONFIGS

    # rollout-long, and every scenario run with the activator in the path, for every app
    result.assert_outcomes(skipped=len(APPS) * (1 + len(CONFIGS["activator-in-path"].scenarios)))
    result.stdout.fnmatch_lines(
        [
            "*pod-delete-long: Knative config activator-in-path needs --platform=kind or "
            "existing (this run: --platform=local)*",
            "*rollout-long: trigger rollout needs --platform=kind or existing "
            "(this run: --platform=local)*",
        ]
    )
    assert "local platform ready" not in result.stdout.str()  # nothing was brought up


def test_tox_envs_and_example_workflow_follow_the_catalog() -> None:
    """`tox -e knative-X.Y` exists for every catalog minor; the CI example pins catalog images."""
    import configparser

    import yaml

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    section = next(s for s in ini.sections() if s.startswith("testenv:knative-"))
    assert section == "testenv:knative-{" + ",".join(catalog.minors()) + "}"
    assert "--knative-version={env:KNATIVE_VERSION}" in ini[section]["commands"]
    for minor in catalog.minors():
        assert f"{minor}: KNATIVE_VERSION = {minor}" in ini[section]["setenv"]
    flow = yaml.safe_load((ROOT / ".github/workflows/conformance.yml").read_text())
    job = flow["jobs"]["conformance"]
    cells = job["strategy"]["matrix"]["include"]
    assert len({c["knative"] for c in cells}) >= 2 and len({c["kubernetes"] for c in cells}) >= 2
    for cell in cells:
        release = catalog.resolve(cell["knative"])
        assert cell["node_image"] == release.kind_node_image
        assert cell["kubernetes"] == release.kind_node_kubernetes
    run = " ".join(step.get("run", "") for step in job["steps"])
    assert (
        "pytest --pyargs pytest_knative_drain.conformance --platform=kind "
        "--knative-version=${{ matrix.knative }}"
    ) in run
    assert "pip install pytest-knative-drain" in run  # the installed suite: no checkout needed
