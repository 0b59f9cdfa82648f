"""HTTPS settings: one `ssl.SSLContext` from the `ssl_*` settings, reloadable.

`make_context(config)` builds the server's context: TLS 1.2 at least, ALPN
``http/1.1``, the certificate chain and key, client certificates verified
against ``ssl_ca_certs`` when ``ssl_cert_reqs`` asks for them, and the cipher
list. Anything that does not load is a `ConfigError` with one line that names
the file and the reason, so that the command line exits 2 before listening.

`reload_context(context, config)` loads the files again into the same context
(SIGHUP): connections opened afterwards get the new certificate, open ones keep
theirs. The files are tried in a scratch context first, so a half-written or
mismatched pair is reported and the old certificate stays in service.

The TLS records themselves are handled by `front.TLSLayer`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

from .config import Config
from .errors import ConfigError

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def make_context(config: Config) -> ssl.SSLContext | None:
    """The server's SSLContext, or None when HTTPS is off."""
    if config.ssl is not None:
        return config.ssl
    if config.ssl_certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"ssl_ciphers {config.ssl_ciphers!r} selects no cipher OpenSSL knows"
            ) from None
    _load(context, config)
    return context


def reload_context(context: ssl.SSLContext, config: Config) -> None:
    """Load the certificate files into `context` again; ConfigError (and the
    context unchanged) when they do not load."""
    if config.ssl_certfile is None:
        return
    _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), config)  # try them first
    _load(context, config)


def _load(context: ssl.SSLContext, config: Config) -> None:
    certfile = config.ssl_certfile
    assert certfile is not None
    for name in ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs"):
        path = getattr(config, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{name} {path!r} not found")
    password: str | Callable[[], str] = config.ssl_keyfile_password or _no_password
    try:
        context.load_cert_chain(certfile, config.ssl_keyfile, password)
    except ConfigError:
        raise
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot load the certificate: {exc.filename!r} not found") from None
    except PermissionError as exc:
        raise ConfigError(
            f"cannot load the certificate: {exc.filename!r} is not readable"
        ) from None
    except ssl.SSLError as exc:
        reason = _pem_problem(config) or _reason(exc)
        raise ConfigError(f"cannot load the certificate {certfile!r}: {reason}") from None
    except OSError as exc:
        raise ConfigError(f"cannot load the certificate {certfile!r}: {exc}") from None
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except FileNotFoundError:
            raise ConfigError(
                f"cannot load ssl_ca_certs: {config.ssl_ca_certs!r} not found"
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load ssl_ca_certs {config.ssl_ca_certs!r}: {_reason(exc)}"
            ) from None
    context.verify_mode = _CERT_REQS[config.ssl_cert_reqs]


def _pem_problem(config: Config) -> str | None:
    """What is wrong with the PEM files, where OpenSSL only says "PEM lib"."""
    certfile = config.ssl_certfile
    assert certfile is not None
    keyfile = config.ssl_keyfile or certfile
    try:
        with open(certfile, "rb") as file:
            cert = file.read(1 << 20)
        with open(keyfile, "rb") as file:
            key = file.read(1 << 20)
    except OSError:
        return None
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        return f"{certfile!r} holds no PEM certificate"
    if b"PRIVATE KEY-----" not in key:
        return f"{keyfile!r} holds no PEM private key"
    if b"ENCRYPTED" in key and config.ssl_keyfile_password is not None:
        return "wrong password for the key (ssl_keyfile_password)"
    return None


def _no_password() -> str:
    # Without this, OpenSSL would ask for the password on the terminal.
    raise ConfigError("the key is encrypted: give its password (ssl_keyfile_password)")


def _reason(exc: OSError) -> str:
    """A short reason for an SSLError: OpenSSL's own words, lower case."""
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    if reason in ("BAD_DECRYPT", "BAD_PASSWORD_READ") or "bad decrypt" in str(exc):
        return "wrong password for the key (ssl_keyfile_password)"
    if reason:
        return str(reason).replace("_", " ").lower()
    return str(exc)


class TLSInfo:
    """What a request can know of its TLS connection (``request.tls``)."""

    __slots__ = ("version", "cipher", "alpn", "client_cert", "_sslobj", "_context", "_asgi")

    def __init__(self, sslobj: ssl.SSLObject, context: ssl.SSLContext | None) -> None:
        #: "TLSv1.2" or "TLSv1.3".
        self.version: str | None = sslobj.version()
        cipher = sslobj.cipher()
        #: The cipher suite's OpenSSL name.
        self.cipher: str | None = cipher[0] if cipher else None
        #: The protocol ALPN agreed ("http/1.1"), or None.
        self.alpn: str | None = sslobj.selected_alpn_protocol()
        #: The client's verified certificate as `SSLSocket.getpeercert()` gives
        #: it (subject, issuer, notAfter, subjectAltName...), or None.
        self.client_cert: dict[str, Any] | None = sslobj.getpeercert() or None
        self._sslobj = sslobj
        self._context = context
        self._asgi: dict[str, Any] | None = None

    @property
    def client_cert_subject(self) -> str | None:
        """The client certificate's subject as an RFC 4514 string
        ("CN=alice,O=Example"), or None."""
        if not self.client_cert:
            return None
        parts = []
        for rdn in reversed(self.client_cert.get("subject", ())):
            for key, value in rdn:
                name = _RDN_NAMES.get(key, key)
                escaped = value.replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+")
                parts.append(f"{name}={escaped}")
        return ",".join(parts)

    @property
    def client_cert_pem(self) -> str | None:
        """The client certificate in PEM, or None."""
        der = self._sslobj.getpeercert(binary_form=True)
        return ssl.DER_cert_to_PEM_cert(der) if der else None

    @property
    def tls_version_code(self) -> int | None:
        """The version as the TLS wire number (0x0303 for TLS 1.2, 0x0304 for 1.3)."""
        return _VERSION_CODES.get(self.version or "")

    @property
    def cipher_suite_code(self) -> int | None:
        """The cipher suite's IANA number, or None when OpenSSL does not say."""
        if self.cipher is None or self._context is None:
            return None
        for known in self._context.get_ciphers():
            if known.get("name") == self.cipher:
                return int(known["id"]) & 0xFFFF
        return None

    def asgi_extension(self) -> dict[str, Any]:
        """The ASGI TLS extension's dict (``scope["extensions"]["tls"]``), made
        once per connection. The server's own certificate is not offered."""
        if self._asgi is None:
            pem = self.client_cert_pem
            self._asgi = {
                "server_cert": None,
                "client_cert_chain": [pem] if pem else [],
                "client_cert_name": self.client_cert_subject,
                "client_cert_error": None,
                "tls_version": self.tls_version_code,
                "cipher_suite": self.cipher_suite_code,
            }
        return self._asgi

    def wsgi_environ(self) -> dict[str, str]:
        """The CGI-style variables WSGI apps look for under HTTPS."""
        environ = {
            "HTTPS": "on",
            "SSL_PROTOCOL": self.version or "",
            "SSL_CIPHER": self.cipher or "",
        }
        if self.client_cert:
            environ["SSL_CLIENT_VERIFY"] = "SUCCESS"
            environ["SSL_CLIENT_S_DN"] = self.client_cert_subject or ""
            environ["SSL_CLIENT_CERT"] = self.client_cert_pem or ""
        else:
            environ["SSL_CLIENT_VERIFY"] = "NONE"
        return environ

    def __repr__(self) -> str:
        return f"<TLSInfo {self.version} {self.cipher} client={self.client_cert_subject}>"


_VERSION_CODES = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
    "domainComponent": "DC",
    "userId": "UID",
}
