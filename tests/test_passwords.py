"""Hashed password files for Basic auth: the hash format, the file, the check."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from conftest import ConnectFactory, ServeFactory

import aserve
from aserve import passwords
from aserve.middleware import BasicAuthMiddleware


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "SCRYPT_N", 2**10)


def test_round_trip() -> None:
    hashed = passwords.hash_password("s3cret")
    assert hashed.startswith("scrypt$1024$8$5$")
    assert passwords.check_hash(hashed) is None
    assert passwords.verify_password("s3cret", hashed)
    assert not passwords.verify_password("s3cret ", hashed)
    assert passwords.hash_password("s3cret") != hashed  # salted


def test_django_pbkdf2_hashes_are_accepted() -> None:
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", b"saltsalt", 1000)
    hashed = f"pbkdf2_sha256$1000$saltsalt${base64.b64encode(digest).decode()}"
    assert passwords.check_hash(hashed) is None
    assert passwords.verify_password("pw", hashed)
    assert not passwords.verify_password("px", hashed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice:s3cret\n", "line 1: not a hashed password"),
        ("# users\n\nalice\n", "line 3: expected USER:HASH"),
        ("alice:{h}\nalice:{h}\n", "line 2: 'alice' appears twice"),
        ("bob:scrypt$1000$8$1$c2FsdA$ZGlnZXN0ZGlnZXN0ZGlnZXN0\n", "power of 2"),
        ("bob:scrypt$1048576$8$1$c2FsdA$ZGlnZXN0ZGlnZXN0ZGlnZXN0\n", "256 MiB"),
        ("bob:scrypt$1024$8$1$!!$ZGlnZXN0\n", "malformed hash"),
        ("# nobody\n", "has no users"),
    ],
)
def test_bad_user_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users"
    path.write_text(text.replace("{h}", passwords.hash_password("x")))
    with pytest.raises(aserve.ConfigError, match=message):
        passwords.read_password_file(path)


async def test_check_remembers_good_pairs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users"
    path.write_text(f"# comment\nalice:{passwords.hash_password('pw')}\n")
    check = passwords.basic_auth_file(path, remember=1)
    calls = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda p, h: calls.append(p) or real(p, h))
    assert await check("alice", "pw")
    assert await check("alice", "pw")
    assert calls == ["pw"]
    assert not await check("alice", "wrong")
    assert not await check("mallory", "pw")  # hashed against the dummy
    assert calls == ["pw", "wrong", "pw"]


async def test_with_static_files(
    tmp_path: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("protected")
    (tmp_path / "users").write_text(f"alice:{passwords.hash_password('pw')}\n")
    static = aserve.StaticFiles(tmp_path / "site")
    auth = BasicAuthMiddleware(passwords.basic_auth_file(tmp_path / "users"))

    async def handler(request: aserve.Request) -> aserve.Response:
        return await auth(request, static)

    token = base64.b64encode(b"alice:pw").decode()
    async with serve(handler) as server:
        client = await connect(server.port)
        await client.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        denied = await client.response()
        await client.send(
            f"GET /a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {token}\r\n\r\n".encode()
        )
        allowed = await client.response()
    assert denied.status == 401
    assert denied.header("www-authenticate") == 'Basic realm="aserve", charset="UTF-8"'
    assert (allowed.status, allowed.body) == (200, b"protected")
