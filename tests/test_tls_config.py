"""The HTTPS settings: what make_context builds and how each bad file is told."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import aserve
from aserve.errors import ConfigError
from aserve.tls import make_context, reload_context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("localhost")
    certfile = tmp_path / "cert.pem"
    keyfile = tmp_path / "key.pem"
    combined = tmp_path / "combined.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.private_key_and_cert_chain_pem.write_to_path(str(combined))
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_key = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    return {
        "cert": str(certfile),
        "key": str(keyfile),
        "combined": str(combined),
        "encrypted": str(encrypted),
        "ca": str(ca_file),
        "other_key": str(other_key),
    }


def test_no_certificate_no_context() -> None:
    assert make_context(aserve.Config()) is None


def test_context_defaults(files: dict[str, str]) -> None:
    config = aserve.Config.build(ssl_certfile=files["cert"], ssl_keyfile=files["key"])
    context = make_context(config)
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_key_inside_the_certificate_file(files: dict[str, str]) -> None:
    assert make_context(aserve.Config.build(ssl_certfile=files["combined"])) is not None


def test_client_certificate_modes(files: dict[str, str]) -> None:
    for mode, expected in (("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)):
        config = aserve.Config.build(
            ssl_certfile=files["cert"],
            ssl_keyfile=files["key"],
            ssl_ca_certs=files["ca"],
            ssl_cert_reqs=mode,
        )
        context = make_context(config)
        assert context is not None and context.verify_mode == expected


def test_program_context_wins(files: dict[str, str]) -> None:
    mine = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert make_context(aserve.Config.build(ssl=mine)) is mine


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ssl_certfile": "/nonexistent/cert.pem"}, "'/nonexistent/cert.pem' not found"),
        ({"ssl_certfile": "cert", "ssl_keyfile": "/nonexistent/key.pem"}, "not found"),
        ({"ssl_certfile": "cert", "ssl_keyfile": "other_key"}, "does not match"),
        ({"ssl_certfile": "cert", "ssl_keyfile": "encrypted"}, "ssl_keyfile_password"),
        (
            {"ssl_certfile": "cert", "ssl_keyfile": "encrypted", "ssl_keyfile_password": "no"},
            "wrong password",
        ),
        ({"ssl_certfile": "cert", "ssl_keyfile": "key", "ssl_ciphers": "NOPE-CIPHER"}, "cipher"),
        (
            {
                "ssl_certfile": "cert",
                "ssl_keyfile": "key",
                "ssl_ca_certs": "/nonexistent/ca.pem",
                "ssl_cert_reqs": "required",
            },
            "ssl_ca_certs",
        ),
        ({"ssl_certfile": "key"}, "cannot load the certificate"),
    ],
)
def test_bad_files_are_one_line(
    files: dict[str, str], options: dict[str, str], message: str
) -> None:
    resolved = {k: files.get(v, v) for k, v in options.items()}
    with pytest.raises(ConfigError) as caught:
        make_context(aserve.Config.build(**resolved))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_encrypted_key_with_its_password(files: dict[str, str]) -> None:
    config = aserve.Config.build(
        ssl_certfile=files["cert"], ssl_keyfile=files["encrypted"], ssl_keyfile_password="s3cret"
    )
    assert make_context(config) is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ssl_keyfile": "k.pem"}, "ssl_keyfile needs ssl_certfile"),
        ({"ssl_ca_certs": "ca.pem"}, "needs ssl_certfile"),
        ({"ssl_certfile": "c.pem", "ssl_cert_reqs": "required"}, "needs ssl_ca_certs"),
    ],
)
def test_settings_that_need_others(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        aserve.Config.build(**options)


def test_reload_keeps_the_old_pair_when_the_new_one_is_broken(files: dict[str, str]) -> None:
    config = aserve.Config.build(ssl_certfile=files["cert"], ssl_keyfile=files["key"])
    context = make_context(config)
    assert context is not None
    broken = config.replace(ssl_keyfile=files["other_key"])
    with pytest.raises(ConfigError, match="does not match"):
        reload_context(context, broken)
    reload_context(context, config)  # the good pair loads again


def test_command_line_bad_certificate_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aserve", "--port", "0", "--ssl-certfile", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aserve: error:"), result.stderr
    assert "not found" in lines[0]
