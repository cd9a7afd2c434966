"""Knative's system-internal TLS for the data path: the certificates and who can use them.

With internal TLS on, the revision reconciler mounts a Secret of the namespace's
data-plane-user certificate into queue-proxy read-only at ``/var/lib/knative/certs``
(deploy.go ``varCertVolumeMount``); queue-proxy serves TLS on ``QUEUE_SERVING_TLS_PORT``
(8112) when the certificate and key files exist there, and keeps plain HTTP on 8012.
The activator dials 8112 with TLS 1.3, SNI ``data-plane.knative.dev``, trusting the CA
and requiring the SAN ``kn-user-<namespace>`` (pkg/activator/certificate/tls_context.go).
The certificate is made as Knative makes it: control-protocol's certificate reconciler
up to 1.11, a Knative Certificate (cert-manager) from 1.12, both with the SANs
``kn-user-<namespace>`` and ``data-plane.knative.dev``.

What queue-proxy reads, per release (pkg/queue/sharedmain/main.go, cmd/queue/main.go):
1.0-1.3 no TLS server; 1.4-1.5 ``tls.crt``/``tls.key``; 1.6-1.8 control-protocol's
``public-cert.pem``/``private-key.pem``; 1.9 on ``tls.crt``/``tls.key`` again. From 1.4
to 1.19 the admin server (8022, where the preStop ``/wait-for-drain`` goes) serves TLS
only when the files exist, so kubelet's plain-HTTP preStop gets 400 at once and the app
is sent SIGTERM while queue-proxy still drains (knative/serving#16162, fixed by #16163 in
1.20.0: the admin server stays plain HTTP).
"""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..load.tls_socket import ClientTLS

CONFIG = "internal-tls"  # the Knative configuration of the matrix (scenarios.CONFIGS)
CERT_DIRECTORY = "/var/lib/knative/certs"  # queue.CertDirectory
ORGANIZATION = "knative.dev"  # certificates.Organization
LEGACY_SAN = "data-plane." + ORGANIZATION  # certificates.LegacyFakeDnsName: the activator's SNI
FIRST_TLS_MINOR = 4  # queue-proxy has no TLS server before Knative 1.4
ADMIN_PLAIN_HTTP_MINOR = 20  # 1.4-1.19 serve the admin port (preStop) over TLS only
_VALID = datetime.timedelta(days=7)


def user_san(namespace: str) -> str:
    """The SAN the activator requires of a pod in ``namespace`` (DataPlaneUserSAN)."""
    return "kn-user-" + namespace


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


CLUSTER_REASON = (
    "internal-tls is not wired on a cluster: from Knative 1.12 system-internal-tls takes "
    "queue-proxy's certificate from a Knative Certificate that cert-manager issues "
    "(net-certmanager; inside serving's controller from 1.15) and the kind stack built here "
    "installs no cert-manager; 1.10-1.11's control-protocol certificates "
    "(config-network internal-encryption) need none, but Kourier's and the activator's "
    "TLS path was never run here. --platform=local runs it with the certificate Knative "
    "would mount"
)


def unsupported(version: str, platform: str = "local") -> str | None:
    """Why internal TLS cannot run for Knative ``version`` on ``platform``, or None."""
    if platform != "local":
        return CLUSTER_REASON
    if _minor(version) < (1, FIRST_TLS_MINOR):
        return (
            f"Knative {version}: queue-proxy serves TLS only from 1.{FIRST_TLS_MINOR} "
            f"(certificates mounted at {CERT_DIRECTORY}); before, there is no internal TLS"
        )
    return None


def file_names(version: str) -> tuple[str, str]:
    """The certificate and key file names Knative ``version``'s queue-proxy reads."""
    if (1, 6) <= _minor(version) <= (1, 8):
        return "public-cert.pem", "private-key.pem"  # control-protocol's Secret keys
    return "tls.crt", "tls.key"  # certificates.CertName, PrivateKeyName


@dataclass(frozen=True)
class Bundle:
    """A CA and the data-plane-user certificate it signed for one namespace (PEM)."""

    namespace: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def san(self) -> str:
        return user_san(self.namespace)

    def client(self) -> ClientTLS:
        """How the activator connects to a pod of this namespace."""
        return ClientTLS(client_context(self.ca_pem), LEGACY_SAN, self.san)


def client_context(ca_pem: bytes | None = None) -> ssl.SSLContext:
    """TLS 1.3 and only ``ca_pem`` trusted (the system's roots without it), names checked."""
    context = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # the activator's MinVersion
    return context


def issue(namespace: str) -> Bundle:
    """A fresh CA and a serving certificate for ``namespace`` as control-protocol makes them:
    RSA 2048, SHA-256, SANs ``kn-user-<namespace>`` and ``data-plane.knative.dev``."""
    from cryptography import x509  # here: the plugin imports this module at collection
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def _name(common_name: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
        if common_name:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        return x509.Name(attrs)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name())
        .issuer_name(_name())
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("control-protocol-certificate"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(user_san(namespace)), x509.DNSName(LEGACY_SAN)]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Bundle(
        namespace=namespace,
        ca_pem=ca.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    )


class CertDir:
    """The Secret volume on the host: a temporary directory bind-mounted read-only into
    queue-proxy. Files are 0644 like a Secret volume's default mode (queue-proxy runs as
    65532); removed on ``close``."""

    def __init__(self, bundle: Bundle, version: str) -> None:
        self.bundle = bundle
        self.path = Path(tempfile.mkdtemp(prefix="knative-drain-certs-"))
        try:
            os.chmod(self.path, 0o755)
            cert_name, key_name = file_names(version)
            for name, data in (
                (cert_name, bundle.cert_pem),
                (key_name, bundle.key_pem),
                ("ca.crt", bundle.ca_pem),  # certificates.CaCertName, in Knative's Secret too
            ):
                target = self.path / name
                target.write_bytes(data)
                os.chmod(target, 0o644)
        except BaseException:
            self.close()
            raise

    def volume(self) -> dict[str, dict[str, str]]:
        """The docker SDK ``volumes`` entry of queue-proxy's certificate mount."""
        return {str(self.path): {"bind": CERT_DIRECTORY, "mode": "ro"}}

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
