"""Knative's system-internal TLS: certificates as Knative makes them, the load engine over
TLS against real servers, and real queue-proxy serving TLS in a local pod."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from misbehaving_servers import LoopbackServer

from pytest_knative_drain import internal_tls, verdict
from pytest_knative_drain.load import Batch, run_batch, run_schedule_sync
from pytest_knative_drain.tls_socket import ClientTLS

NAMESPACE = "knative-drain"


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
