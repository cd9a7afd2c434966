"""Knative's system-internal TLS: certificates as Knative makes them, the load engine over
TLS against real servers, and real queue-proxy serving TLS in a local pod."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
from conformance_cmd import conformance_cmd
from misbehaving_servers import LoopbackServer

from pytest_knative_drain.knative import catalog, internal_tls
from pytest_knative_drain.load import Batch, run_batch, run_schedule_sync
from pytest_knative_drain.load.tls_socket import ClientTLS
from pytest_knative_drain.matrix.configs import CONFIGS
from pytest_knative_drain.matrix.scenarios import SCENARIOS
from pytest_knative_drain.platforms.local import LABEL, LocalPlatform
from pytest_knative_drain.run import verdict

NAMESPACE = "knative-drain"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle() -> internal_tls.Bundle:
    return internal_tls.issue(NAMESPACE)


def _server_context(bundle: internal_tls.Bundle, tmp_path: Path) -> ssl.SSLContext:
    """A TLS 1.3 server with the pod's certificate, as queue-proxy serves it."""
    (tmp_path / "tls.crt").write_bytes(bundle.cert_pem)
    (tmp_path / "tls.key").write_bytes(bundle.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    return context


# -- the certificate ------------------------------------------------------------------------


def test_certificate_carries_what_the_activator_checks(bundle, tmp_path) -> None:
    """SANs kn-user-<namespace> and data-plane.knative.dev, signed by the CA; a server
    with it passes Python's verification with SNI data-plane.knative.dev."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "kn-user-knative-drain",
        "data-plane.knative.dev",
    ]
    ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    cert.verify_directly_issued_by(ca)
    assert bundle.client().server_hostname == internal_tls.LEGACY_SAN
    assert bundle.client().required_san == "kn-user-knative-drain"


@pytest.mark.parametrize(
    ("version", "names", "unsupported"),
    [
        ("1.3.2", ("tls.crt", "tls.key"), "queue-proxy serves TLS only from 1.4"),
        ("1.4.0", ("tls.crt", "tls.key"), None),
        ("1.7.0", ("public-cert.pem", "private-key.pem"), None),
        ("1.9.0", ("tls.crt", "tls.key"), None),
        ("1.14.2", ("tls.crt", "tls.key"), None),
    ],
)
def test_file_names_and_support_per_release(version, names, unsupported) -> None:
    assert internal_tls.file_names(version) == names
    reason = internal_tls.unsupported(version)
    assert (reason is None) if unsupported is None else (unsupported in reason)


def test_cluster_platforms_say_why_they_skip() -> None:
    reason = internal_tls.unsupported("1.14.2", "kind")
    assert reason is not None and "cert-manager" in reason
    assert internal_tls.unsupported("1.14.2", "local") is None


def test_cert_dir_is_readable_by_queue_proxy_and_removed(bundle) -> None:
    d = internal_tls.CertDir(bundle, "1.14.2")
    try:
        assert sorted(p.name for p in d.path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in d.path.iterdir())
        assert d.volume() == {str(d.path): {"bind": "/var/lib/knative/certs", "mode": "ro"}}
    finally:
        d.close()
    assert not d.path.exists()


# -- the load engine over TLS ---------------------------------------------------------------


def test_engine_speaks_tls_verifying_ca_and_san(bundle, tmp_path) -> None:
    with LoopbackServer("ok", pod="pod-t", tls=_server_context(bundle, tmp_path)) as srv:
        assert srv.url.startswith("https://")
        result = run_batch(srv.url + "?sleep=100", 20, expect_body="slept", tls=bundle.client())
        reused = run_batch(srv.url, 20, concurrency=2, reuse_connections=True, tls=bundle.client())
    assert verdict.summarize(result.records).classes == {"ok": 20}
    assert all(r.pod == "pod-t" and r.body_ok for r in result.records)
    assert verdict.summarize(reused.records).classes == {"ok": 20}
    assert srv.requests == 40 and srv.connections == 22  # 20, then 2 kept-alive


def test_engine_refuses_a_server_it_does_not_trust(bundle, tmp_path) -> None:
    """Another CA's client, and the right CA with another namespace's SAN: the handshake
    fails, no request is written, each is recorded once as a protocol error."""
    stranger = internal_tls.issue("elsewhere")
    wrong_san = ClientTLS(
        internal_tls.client_context(bundle.ca_pem), internal_tls.LEGACY_SAN, "kn-user-other"
    )
    with LoopbackServer("ok", tls=_server_context(bundle, tmp_path)) as srv:
        untrusted = run_batch(srv.url, 3, tls=stranger.client())
        mismatched = run_batch(srv.url, 3, tls=wrong_san)
    assert srv.requests == 0
    for result, detail in (
        (untrusted, "CERTIFICATE_VERIFY_FAILED"),
        (mismatched, "san 'kn-user-other' does not have a matching name"),
    ):
        assert [r.error for r in result.records] == ["protocol_error"] * 3
        assert all(
            detail in r.error_detail and "TLS handshake" in r.error_detail for r in result.records
        )
        assert all(r.sent_mono is None for r in result.records)


@pytest.mark.parametrize(
    ("behaviour", "error", "detail"),
    [
        ("reset", "reset", "Connection reset by peer"),
        ("close", "empty_reply", "before any response byte"),
        ("truncate", "truncated", "received 10 bytes, expected 100"),
        ("garbage", "protocol_error", "illegal status line"),
        ("early_close", "empty_reply", "before any response byte"),
    ],
)
def test_transport_errors_classify_the_same_over_tls(bundle, tmp_path, behaviour, error, detail):
    """A cut over TLS is the same cut: close_notify or not, the engine sees the end."""
    with LoopbackServer(behaviour, tls=_server_context(bundle, tmp_path)) as srv:
        result = run_batch(srv.url + "?sleep=100", 4, tls=bundle.client())
    assert [r.error for r in result.records] == [error] * 4
    assert all(detail in (r.error_detail or "") for r in result.records)


def test_tls_settings_need_an_https_url(bundle) -> None:
    with pytest.raises(ValueError, match="tls: settings for TLS given with a plain http://"):
        run_schedule_sync("http://127.0.0.1:1/", [Batch("b", 1)], tls=bundle.client())
    with pytest.raises(ValueError, match="tls: None or a ClientTLS"):
        run_schedule_sync("https://127.0.0.1:1/", [Batch("b", 1)], tls="yes")  # type: ignore[arg-type]


# -- real queue-proxy in a local pod --------------------------------------------------------


@pytest.fixture(scope="module")
def platform():
    try:
        p = LocalPlatform.provision(
            catalog.resolve("1.14"), apps=["go-shutdown"], run_id=f"tls-{uuid.uuid4().hex[:6]}"
        )
    except Exception as exc:  # noqa: BLE001 - report why the engine/images are missing
        pytest.skip(f"local platform unavailable: {exc}")
    yield p
    certs = p._certs.path if p._certs is not None else None
    p.close()
    assert not p.client.containers.list(all=True, filters={"label": f"{LABEL}={p.run_id}"})
    assert certs is None or not certs.exists(), "certificate directory left behind"


@pytest.mark.slow
def test_local_pod_serves_internal_tls_as_knative_mounts_it(platform) -> None:
    """queue-proxy 1.14.2 with the certificate at /var/lib/knative/certs (read-only):
    TLS 1.3 on 8112 for a client that trusts the CA and checks the SAN, a refusal for one
    that does not, plain HTTP still on 8012; its admin port is TLS-only, so kubelet's
    plain-HTTP preStop gets 400 at once and the app is sent SIGTERM at the delete
    (knative/serving#16162)."""
    config, scenario = CONFIGS[internal_tls.CONFIG], SCENARIOS["pod-delete-short"]
    with (
        platform.configure(config, scenario),
        platform.pod("go-shutdown", None, timeout_seconds=40) as pod,
    ):
        assert pod.url.startswith("https://127.0.0.1:") and pod.tls is not None
        trusted = run_batch(pod.url + "/?sleep=0", 5, expect_body="slept", tls=pod.tls)
        assert verdict.summarize(trusted.records).classes == {"ok": 5}
        assert {r.pod for r in trusted.records} == {pod.name}
        stranger = internal_tls.issue(NAMESPACE).client()  # same names, another CA
        refused = run_batch(pod.url + "/?sleep=0", 2, tls=stranger)
        assert [r.error for r in refused.records] == ["protocol_error"] * 2
        assert "CERTIFICATE_VERIFY_FAILED" in refused.records[0].error_detail
        plain = f"http://127.0.0.1:{pod._ports[8012]}/?sleep=0"
        with urllib.request.urlopen(plain, timeout=10) as response:  # noqa: S310
            assert response.status == 200
        qp = pod._containers["queue-proxy"]
        qp.reload()
        mounts = [m for m in qp.attrs["Mounts"] if m["Destination"] == internal_tls.CERT_DIRECTORY]
        assert len(mounts) == 1 and mounts[0]["RW"] is False
        pod.delete()
        termination = pod.wait_gone()
    events = {e.name: e for e in pod.events}
    assert events["preStop returned"].detail == "status 400"
    assert termination.prestop_status == 400
    assert events["SIGTERM user-container"].mono - termination.t0_mono < 5  # not after 30 s


def test_release_without_tls_is_skipped_at_collection(pytester: pytest.Pytester) -> None:
    """Knative 1.3 has no TLS server in queue-proxy; a cluster platform cannot set it up:
    each case says why at collection (no platform is made for it)."""
    pytester.makeini("[pytest]\n")
    for platform_args, needle in (
        (["--platform=local", "--knative-version=1.3"], "queue-proxy serves TLS only from 1.4"),
        (["--platform=kind", "--knative-version=1.14"], "cert-manager"),
    ):
        items, _ = pytester.inline_genitems(
            str(ROOT / "conformance" / "test_pod_delete.py"),
            *platform_args,
            "-p",
            "no:cacheprovider",
        )
        tls_items = [i for i in items if "-internal-tls-" in i.name]
        assert tls_items
        for item in tls_items:
            skip = item.get_closest_marker("skip")
            assert skip is not None and needle in skip.kwargs["reason"], item.name


# -- the conformance suite under internal TLS -----------------------------------------------


@pytest.mark.slow
def test_conformance_internal_tls_local(tmp_path: Path) -> None:
    """pod-delete-short and -long under internal-tls on 1.14.2 for go-shutdown and go-exit:
    the good app passes, the broken one is caught by queue-proxy as without TLS, and the
    short case go-exit fails only as the recorded preStop bug says (xfail strict)."""
    report_path = tmp_path / "drain-report.json"
    proc = subprocess.run(
        conformance_cmd(
            "1.14",
            "internal_tls and (pod_delete_long or pod_delete_short) and (go_shutdown or go_exit)",
            f"--drain-report={report_path}",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    results = {
        (r["scenario"], r["app"]): r for r in json.loads(report_path.read_text())["scenarios"]
    }
    assert sorted(results) == [
        ("pod-delete-long", "go-exit"),
        ("pod-delete-long", "go-shutdown"),
        ("pod-delete-short", "go-exit"),
        ("pod-delete-short", "go-shutdown"),
    ]
    for result in results.values():
        assert result["config"]["name"] == internal_tls.CONFIG
        assert all(r["url"].startswith("https://") for r in result["records"])
    for scenario in ("pod-delete-long", "pod-delete-short"):
        good = results[(scenario, "go-shutdown")]
        assert good["verdict"] == "pass" and good["summary"]["strict_sli"] == 1.0
    caught = results[("pod-delete-long", "go-exit")]
    assert caught["expectation_met"] and "queue-proxy" in caught["catches"]
    known = results[("pod-delete-short", "go-exit")]
    assert known["outcome"] == "known"
    assert known["known_failure"]["id"] == "internal-tls-prestop-gets-400-exit-at-once"
