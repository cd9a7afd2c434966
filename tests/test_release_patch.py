"""A minor runs its newest patch the module proxy serves, where Knative is built here
(platforms/release_patch.py), against a real HTTP module proxy on loopback.

The proxy here filters: it refused knative.dev/serving@v0.48.3 (1.21.3) and v0.46.9
(1.19.9) on 2026-12-05, and a matrix leg of ``--knative-version=1.21`` failed at its build.
The tests' proxy speaks the GOPROXY protocol (``<module>/@v/<version>.info|.mod|.zip``)
for a chosen set of versions and refuses the rest with 403, as the mirror does; ``go env``
reads GOPROXY and GOMODCACHE from the environment, so the code under test asks it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_knative_drain.knative import catalog
from pytest_knative_drain.platforms.release_patch import buildable

SERVED = {"v0.48.0", "v0.48.1", "v0.48.2", "v0.46.6", "v0.46.7", "v0.50.0"}
# go.mod files served (GET); every other .mod is refused, as go's own GETs are below. As on
# 2026-12-07: serving v0.46.7 (1.19.7) requires a knative.dev/pkg whose zip is refused.
PKG_REFUSED, PKG_SERVED = "v0.0.0-20251022154045-7da1174b871b", "v0.0.0-20250909011231-077dcf0d00e8"
MODS = {
    "/knative.dev/serving/@v/v0.46.7.mod": "module knative.dev/serving\n\nrequire (\n"
    "\tknative.dev/networking v0.0.0-20251022155347-806653eb2af8\n"
    f"\tknative.dev/pkg {PKG_REFUSED}\n)\n",
    "/knative.dev/serving/@v/v0.46.6.mod": f"module knative.dev/serving\n\nrequire knative.dev/pkg "
    f"{PKG_SERVED} // indirect\n",
}
DEPENDENCY_ZIPS = {
    f"/knative.dev/pkg/@v/{PKG_SERVED}.zip",
    "/knative.dev/networking/@v/v0.0.0-20251022155347-806653eb2af8.zip",
}


class ModuleProxy(http.server.ThreadingHTTPServer):
    """knative.dev/serving at the ``SERVED`` versions; every request is kept."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ModuleProxy

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self.server.asked.append(self.path)
        prefix = "/knative.dev/serving/@v/"
        version = self.path.removeprefix(prefix).rsplit(".", 1)[0]
        served = (self.path.startswith(prefix) and version in SERVED) or (
            self.path in DEPENDENCY_ZIPS
        )
        self.send_response(200 if served else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - what go itself asks: refused, as the mirror does
        self.server.asked.append(self.path)
        if self.path in MODS:
            body = MODS[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = b"This module version is not available.\n"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleProxy]:
    server = ModuleProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GOPROXY", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))  # empty: the proxy answers
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_minor_whose_newest_patch_is_refused_runs_the_newest_served_one(
    proxy: ModuleProxy,
) -> None:
    choice = buildable(catalog.resolve("1.21"), "1.21")
    assert catalog.resolve("1.21").version == "1.21.3"
    assert choice.release == catalog.resolve("1.21.2")
    assert choice.substituted == (
        "Knative 1.21.3: the module proxy refuses knative.dev/serving@v0.48.3; 1.21.2 "
        "(knative.dev/serving@v0.48.2) is the newest 1.21 patch it serves"
    )


def test_a_patch_whose_compiled_dependency_is_refused_is_passed_over(proxy: ModuleProxy) -> None:
    """1.19.9 is refused; 1.19.7's serving module is served but the knative.dev/pkg it
    compiles is not (its build died on that zip after a whole Kubernetes build): 1.19.6."""
    choice = buildable(catalog.resolve("v1.19"), "v1.19")
    assert choice.release.version == "1.19.6"
    assert choice.substituted == (
        "Knative 1.19.9: the module proxy refuses knative.dev/serving@v0.46.9; 1.19.6 "
        "(knative.dev/serving@v0.46.6) is the newest 1.19 patch it serves"
    )
    assert f"/knative.dev/pkg/@v/{PKG_REFUSED}.zip" in proxy.asked
    choice = buildable(catalog.resolve("1.19.7"), "1.19")
    assert choice.release.version == "1.19.6"
    assert choice.substituted.startswith(
        f"Knative 1.19.7: the module proxy refuses knative.dev/pkg@{PKG_REFUSED}, which "
        "knative.dev/serving@v0.46.7 builds; 1.19.6"
    )


def test_a_patch_the_user_named_is_never_replaced(proxy: ModuleProxy) -> None:
    choice = buildable(catalog.resolve("1.21.3"), "1.21.3")
    assert choice.release.version == "1.21.3" and choice.substituted is None
    assert proxy.asked == []  # not even asked: its build fails naming the nearest patch


def test_a_served_newest_patch_is_kept(proxy: ModuleProxy) -> None:
    choice = buildable(catalog.resolve("1.23"), "1.23")
    assert (choice.release.version, choice.substituted) == ("1.23.0", None)


def test_a_module_already_downloaded_asks_no_proxy(proxy: ModuleProxy, tmp_path: Path) -> None:
    zips = tmp_path / "modcache" / "cache" / "download" / "knative.dev" / "serving" / "@v"
    zips.mkdir(parents=True)
    (zips / "v0.48.3.zip").write_bytes(b"PK")
    (zips / "v0.48.3.mod").write_text("module knative.dev/serving\n")  # go keeps both
    choice = buildable(catalog.resolve("1.21"), "1.21")
    assert (choice.release.version, choice.substituted) == ("1.21.3", None)
    assert proxy.asked == []


def test_a_minor_with_no_served_patch_is_left_to_its_build(proxy: ModuleProxy) -> None:
    choice = buildable(catalog.resolve("1.22"), "1.22")
    assert (choice.release.version, choice.substituted) == (catalog.resolve("1.22").version, None)


def test_the_run_says_which_patch_ran(proxy: ModuleProxy, pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    report = pytester.path / "run.json"
    result = pytester.runpytest_subprocess(
        "--platform=local",
        "--knative-version=1.21",
        f"--drain-report={report}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["knative-drain: Knative 1.21.3: the module proxy refuses knative.dev/serving@v0.48.3;*"]
    )
    knative = json.loads(report.read_text())["knative"]
    assert knative["version"] == "1.21.2" and knative["requested_version"] == "1.21"
    assert "refuses knative.dev/serving@v0.48.3" in knative["substituted"]
    markdown = report.with_suffix(".md").read_text()
    assert "| patch substituted | Knative 1.21.3: the module proxy refuses" in markdown


def test_release_artefacts_asked_for_are_not_substituted(
    proxy: ModuleProxy, pytester: pytest.Pytester
) -> None:
    """--kind-build=release installs the published 1.21.3: nothing is built, nothing asked."""
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(
        "--platform=kind", "--kind-build=release", "--knative-version=1.21", "--co"
    )
    assert result.ret == 0, result.stderr.str()
    assert "module proxy refuses" not in result.stdout.str()
    assert proxy.asked == []


def test_a_module_whose_info_is_refused_is_read_as_a_build_extracted_it(
    proxy: ModuleProxy, tmp_path: Path
) -> None:
    """gomod.download: the mirror refused the .info of knative.dev/caching@v0.0.0-2026042214
    0616-453ad996bbe2 (serving 1.22.1 links its Image CRD) and served .mod and .zip, which
    serving's build had extracted; ``go mod download`` still failed on the .info. A module
    the build never extracted is still an error."""
    from pytest_knative_drain.builders import gomod

    module, version = "knative.dev/caching", "v0.0.0-20260422140616-453ad996bbe2"
    with pytest.raises(gomod.GoBuildError, match=r"\.info: 403"):
        gomod.download(module, version)  # nothing extracted yet
    cache = tmp_path / "modcache"
    extracted = cache / f"{module}@{version}"
    (extracted / "config").mkdir(parents=True)
    (extracted / "config" / "300-image.yaml").write_text("kind: CustomResourceDefinition\n")
    mod = cache / "cache" / "download" / module / "@v" / f"{version}.mod"
    mod.parent.mkdir(parents=True)
    mod.write_text(f"module {module}\n")
    info = gomod.download(module, version)
    assert (info["Dir"], info["GoMod"]) == (str(extracted), str(mod))
    assert any(p.endswith(f"{version}.info") for p in proxy.asked)  # go did ask, and was refused
