"""The certification bundle (--drain-bundle, evidence/bundle.py) and its verifier
(``knative-drain verify``, evidence/verify.py) on real runs of the local suite.

The whole local suite's bundle must verify, as a directory and as its .tar.gz. Each way a
bundle can be unfit has its twin here: a file removed, a file edited without its
checksum, a result edited with the checksums rewritten (as someone hiding a failure
would), a run that was not the whole suite (a real ``-k`` run), a retried test, a
retrying plugin, and versions that disagree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conformance_cmd import conformance_cmd

from pytest_knative_drain import cli
from pytest_knative_drain.evidence.bundle import SUMS, checksums
from pytest_knative_drain.evidence.verify import verify

pytestmark = pytest.mark.slow
PRODUCT = {
    "vendor": "Example Corp",
    "name": "Example Knative",
    "version": "3.1",
    "type": "distribution",
    "description": "Knative Serving as Example Corp ships it",
    "website_url": "https://example.com/knative",
    "documentation_url": "https://example.com/knative/docs",
    "contact_email_address": "knative@example.com",
}


def _run(out: Path, select: str | None, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = conformance_cmd("1.14", select or "", f"--drain-bundle={out / 'bundle'}", *extra)
    if select is None:  # the whole suite: no -k at all
        i = cmd.index("-k")
        del cmd[i : i + 2]
    return subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole local suite at 1.14 with --drain-bundle (about 3 minutes). A run with a
    failed case makes a bundle as sound as a passing one: verify judges the bundle, the
    run's verdict is in it."""
    out = tmp_path_factory.mktemp("whole")
    proc = _run(out, None)
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode in (0, 1), proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "certification bundle: " in proc.stdout
    return out / "bundle"


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cases only (-k), with a filled-in --product."""
    out = tmp_path_factory.mktemp("partial")
    (out / "product.yaml").write_text(yaml.safe_dump(PRODUCT))
    proc = _run(
        out,
        "pod-delete-short and (go-shutdown or go-exit) and not internal_tls",
        f"--product={out / 'product.yaml'}",
        "--junitxml=junit-of-mine.xml",
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert (out / "junit-of-mine.xml").is_file()  # the user's JUnit stays where asked
    return out / "bundle"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _reseal(bundle: Path) -> None:
    """Rewrite SHA256SUMS after an edit, as someone hiding one would."""
    (bundle / SUMS).write_text(checksums(bundle))


def _edit_json(bundle: Path, name: str, change) -> None:
    path = bundle / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
    _reseal(bundle)


def test_the_whole_local_suite_bundle_verifies(whole: Path, capsys) -> None:
    found = verify(whole)
    assert found.problems == [], found.problems
    report = json.loads((whole / "drain-report.json").read_text())
    assert found.cases == len(report["scenarios"]) > 40
    assert found.notes == ["PRODUCT.yaml is the template: pass --product FILE to fill it"]
    archive = whole.with_name("bundle.tar.gz")
    assert verify(archive).ok
    assert cli.main(["verify", str(archive)]) == 0
    assert "verify: OK" in capsys.readouterr().out
    session = json.loads((whole / "session.json").read_text())
    assert session["deselected"] == 0 and "-k" not in session["args"]
    skipped = [t for t in session["tests"].values() if t["outcome"] == "skipped"]
    assert skipped and all("--platform=" in t["skip_reason"] for t in skipped)
    assert {t["outcome"] for t in session["tests"].values()} >= {"passed", "xfailed"}
    # the pod logs of cases that missed their expectation (known Knative failures here)
    assert any(p.parts[-3] == "pod-logs" for p in whole.rglob("*.log"))
    assert not list(whole.parent.glob(".bundle.junit.xml"))  # its own JUnit, removed


def test_a_partial_run_is_refused(partial: Path) -> None:
    problems = verify(partial).problems
    assert any(re.match(r"partial run: \d+ test\(s\) deselected", p) for p in problems)
    assert any("case(s) of the suite never collected" in p for p in problems)
    product = yaml.safe_load((partial / "PRODUCT.yaml").read_text())
    assert product == {**PRODUCT, "knative_version": "1.14.2"}
    assert not any("PRODUCT.yaml" in p for p in problems) and not verify(partial).notes


def test_a_file_removed_or_edited_is_refused(whole: Path, tmp_path: Path) -> None:
    bundle = _copy(whole, tmp_path)
    (bundle / "junit.xml").unlink()
    readme = bundle / "README.md"
    readme.write_text(readme.read_text().replace("Verdict:", "Verdict (fine):"))
    (bundle / "extra.txt").write_text("not from the run")
    problems = verify(bundle).problems
    assert "junit.xml: missing" in problems
    assert "README.md: checksum does not match SHA256SUMS (edited or damaged)" in problems
    assert "extra.txt: not listed in SHA256SUMS" in problems


def _failing(report: dict) -> dict:
    return next(s for s in report["scenarios"] if s["summary"]["ok"] < s["summary"]["total"])


def test_a_failure_hidden_with_the_sums_rewritten_is_refused(whole: Path, tmp_path: Path) -> None:
    bundle = _copy(whole, tmp_path)

    def hide_one(report: dict) -> None:  # a cut request made "ok", the summary left
        record = next(r for r in _failing(report)["records"] if r["class"] != "ok")
        record["class"] = "ok"

    _edit_json(bundle, "drain-report.json", hide_one)
    problems = verify(bundle).problems
    assert any("summary ok" in p and "but the records give" in p for p in problems), problems
    assert any("is 'ok' but ended" in p for p in problems), problems


def test_an_edited_summary_is_refused(whole: Path, tmp_path: Path) -> None:
    bundle = _copy(whole, tmp_path)

    def improve(report: dict) -> None:
        s = _failing(report)
        s["summary"]["strict_sli"] = 1.0
        report["verdict"] = "pass" if report["verdict"] != "pass" else "fail"

    _edit_json(bundle, "drain-report.json", improve)
    problems = verify(bundle).problems
    assert any("strict SLI 1.0 but the records give" in p for p in problems), problems
    assert any(p.startswith("verdict ") for p in problems), problems
    assert "README.md: its verdict line is not the report's" in problems


def test_a_rerun_a_retrying_plugin_and_a_foreign_skip_are_refused(
    whole: Path, tmp_path: Path
) -> None:
    bundle = _copy(whole, tmp_path)
    ran = {}

    def retried(session: dict) -> None:
        nodeid, test = next((k, t) for k, t in session["tests"].items() if t["outcome"] == "passed")
        test["reruns"] = 1
        ran["rerun"] = nodeid
        other = next(
            t for t in session["tests"].values() if t["outcome"] == "passed" and t is not test
        )
        other.update(outcome="skipped", skip_reason="flaky here")
        ran["skipped"] = other["case"]
        session["plugins"].append({"name": "pytest-rerunfailures", "version": "15.0"})

    _edit_json(bundle, "session.json", retried)
    problems = verify(bundle).problems
    assert f"{ran['rerun']}: run more than once" in problems
    assert "plugin pytest-rerunfailures was loaded: a gate never reruns a case" in problems
    assert f"{ran['skipped']}: skipped (flaky here), not by the suite" in problems


def test_versions_that_disagree_are_refused(whole: Path, tmp_path: Path) -> None:
    bundle = _copy(whole, tmp_path)
    product = bundle / "PRODUCT.yaml"
    product.write_text(
        product.read_text().replace("knative_version: 1.14.2", "knative_version: 1.18.1")
    )
    _reseal(bundle)
    assert "PRODUCT.yaml: Knative 1.18.1, the report 1.14.2" in verify(bundle).problems


def test_no_bundle_or_a_broken_archive_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    assert cli.main(["verify", str(tmp_path / "nothing")]) == 1
    out = capsys.readouterr().out
    assert out.strip() == f"FAIL: {tmp_path / 'nothing'}: no bundle directory or .tar.gz there"
    broken = tmp_path / "b.tar.gz"
    broken.write_bytes(b"not gzip")
    assert cli.main(["verify", str(broken)]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [f"FAIL: {broken}: not a readable .tar.gz (not a gzip file)"]


def test_the_cli_entry_point_exists() -> None:
    done = subprocess.run(
        [shutil.which("knative-drain") or "knative-drain", "verify", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--drain-bundle" in done.stdout


def test_a_directory_of_yours_is_never_replaced(tmp_path: Path, pytester: pytest.Pytester) -> None:
    """The bundle replaces an earlier bundle; a directory with other files is refused, at
    configure (before the run) and again when writing."""
    from pytest_knative_drain.evidence.bundle import BundleError, write_bundle

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="no earlier bundle"):
        write_bundle(mine, {"README.md": "r"})
    assert (mine / "thesis.tex").read_text() == "years of work"
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(f"--drain-bundle={mine}", "--platform=local", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--drain-bundle={mine}: {mine} holds files and is no earlier bundle" in (
        result.stderr.str()
    )
    earlier = tmp_path / "earlier"
    write_bundle(earlier, {"a.txt": "1"})
    write_bundle(earlier, {"b.txt": "2"})
    assert sorted(p.name for p in earlier.iterdir()) == ["SHA256SUMS", "b.txt"]
