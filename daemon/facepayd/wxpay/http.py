"""Long-lived httpx clients for WeChat Pay: one for the API, one with the merchant certificate."""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from facepayd.errors import ConfigError

DEFAULT_LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=60.0)


@dataclass(frozen=True, slots=True)
class ClientCert:
    """The merchant's API certificate (with chain) and private key, held only in memory."""

    certificate: x509.Certificate
    private_key: PrivateKeyTypes = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pkcs12(cls, data: bytes, password: bytes | None) -> ClientCert:
        """Load a PKCS#12 bundle (apiclient_cert.p12)."""
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, password)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "client certificate: cannot read PKCS#12 (format or password)"
            ) from exc
        if key is None or cert is None:
            raise ConfigError("client certificate: PKCS#12 lacks the certificate or the key")
        return cls._checked(cert, key, tuple(extra))

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, password: bytes | None = None) -> ClientCert:
        """Load a PEM certificate (chain allowed) and a PEM private key."""
        try:
            certs = x509.load_pem_x509_certificates(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password)
        except (ValueError, TypeError) as exc:
            raise ConfigError("client certificate: cannot read PEM certificate or key") from exc
        return cls._checked(certs[0], key, tuple(certs[1:]))

    @classmethod
    def load_pkcs12_file(cls, path: Path, password: bytes | None) -> ClientCert:
        """Read and load a PKCS#12 file."""
        return cls.from_pkcs12(_read(path), password)

    @classmethod
    def load_pem_files(
        cls, cert_path: Path, key_path: Path, password: bytes | None = None
    ) -> ClientCert:
        """Read and load PEM certificate and key files."""
        return cls.from_pem(_read(cert_path), _read(key_path), password)

    def apply_to(self, context: ssl.SSLContext) -> None:
        """Install certificate and key into a TLS context; the key never rests on disk in clear."""
        # load_cert_chain only takes paths, so the key goes through a private temporary file,
        # encrypted under a one-time password that exists only in this process's memory.
        password = secrets.token_urlsafe(32).encode("ascii")
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
        pem += b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain)
        )
        directory = tempfile.mkdtemp(prefix="facepayd-cert-")
        try:
            path = os.path.join(directory, "client.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            context.load_cert_chain(path, password=password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("client certificate: cannot install it into TLS") from exc
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    @classmethod
    def _checked(
        cls, cert: x509.Certificate, key: PrivateKeyTypes, chain: tuple[x509.Certificate, ...]
    ) -> ClientCert:
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            raise ConfigError("client certificate: the private key does not match the certificate")
        return cls(certificate=cert, private_key=key, chain=chain)


@dataclass(frozen=True, slots=True)
class WxPayHttpClients:
    """The pair of long-lived clients; secapi is None when no merchant certificate is configured."""

    api: httpx.AsyncClient
    secapi: httpx.AsyncClient | None

    async def aclose(self) -> None:
        """Close both clients and their pooled connections."""
        try:
            await self.api.aclose()
        finally:
            if self.secapi is not None:
                await self.secapi.aclose()


def build_ssl_context(ca_file: str | None, client_cert: ClientCert | None = None) -> ssl.SSLContext:
    """A verifying TLS ≥1.2 client context trusting ca_file (or the certifi bundle)."""
    try:
        context = ssl.create_default_context(cafile=ca_file or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("cannot load the CA bundle for WeChat Pay") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        client_cert.apply_to(context)
    return context


def build_http_clients(
    ca_file: str | None,
    client_cert: ClientCert | None,
    timeout: httpx.Timeout,
    *,
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> WxPayHttpClients:
    """Build the keep-alive API client and, given a merchant certificate, the mTLS one."""

    def client(context: ssl.SSLContext) -> httpx.AsyncClient:
        # trust_env=False: proxies and CA bundles come from our config, never from the environment.
        return httpx.AsyncClient(
            verify=context, timeout=timeout, limits=limits, trust_env=False, follow_redirects=False
        )

    api = client(build_ssl_context(ca_file))
    secapi = None if client_cert is None else client(build_ssl_context(ca_file, client_cert))
    return WxPayHttpClients(api=api, secapi=secapi)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"client certificate: cannot read {path.name}") from exc
