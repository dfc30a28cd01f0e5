"""A throw-away PKI for the simulators: test CA, loopback server cert, merchant client cert."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class TestPki:
    """Paths of the generated files; keys are 0600 and unencrypted except the PKCS#12 bundle."""

    __test__ = False  # not a pytest test class despite the name

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_p12: Path
    client_p12_password: bytes


def generate_test_pki(
    directory: Path,
    *,
    p12_password: bytes = b"sim-p12-password",
    client_expired: bool = False,
    server_names: tuple[str, ...] = (),
) -> TestPki:
    """Create a test CA and the certificates signed by it in directory (which must exist).

    client_expired: the merchant client certificate's validity ended a day ago.
    server_names: more DNS names for the server certificate (a client that cannot be given a
    base URL reaches the simulator through a proxy under WeChat Pay's own host name).
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("facepay simulator test CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str,
        usage: x509.ObjectIdentifier,
        *extra: x509.ExtensionType,
        issued: datetime.datetime = now,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(common_name), ca_name, key.public_key(), issued)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.SubjectAlternativeName(
            [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
                *(x509.DNSName(name) for name in server_names),
            ]
        ),
    )
    # Issued so long ago that its validity (_VALIDITY) ended a day before now.
    client_issued = now - _VALIDITY - datetime.timedelta(days=1) if client_expired else now
    client_key, client_cert = leaf(
        "facepay simulated merchant", ExtendedKeyUsageOID.CLIENT_AUTH, issued=client_issued
    )

    pki = TestPki(
        ca_cert=directory / "sim-ca.pem",
        server_cert=directory / "sim-server.pem",
        server_key=directory / "sim-server.key",
        client_cert=directory / "apiclient_cert.pem",
        client_key=directory / "apiclient_key.pem",
        client_p12=directory / "apiclient_cert.p12",
        client_p12_password=p12_password,
    )
    _write(pki.ca_cert, _cert_pem(ca_cert), 0o644)
    _write(pki.server_cert, _cert_pem(server_cert), 0o644)
    _write(pki.server_key, _key_pem(server_key), 0o600)
    _write(pki.client_cert, _cert_pem(client_cert), 0o644)
    _write(pki.client_key, _key_pem(client_key), 0o600)
    p12 = pkcs12.serialize_key_and_certificates(
        b"apiclient",
        client_key,
        client_cert,
        [ca_cert],
        serialization.BestAvailableEncryption(p12_password),
    )
    _write(pki.client_p12, p12, 0o600)
    return pki


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facepay-terminal simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created afresh with its final mode so a key is never readable by others, not even briefly.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
