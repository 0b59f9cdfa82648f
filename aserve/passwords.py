"""Hashed passwords for HTTP Basic auth, beside `middleware.basic_auth_users`
(plain passwords given in code): `hash_password` makes the hash of one line of a user file,
`read_password_file` reads such a file, `basic_auth_file` turns one into the
`check` of `BasicAuthMiddleware`.

The file: one ``USER:HASH`` a line; blank lines and lines starting with "#"
are skipped; a user name has no ":". HASH is

    scrypt$N$R$P$SALT$DIGEST         what `hash_password` makes (RFC 7914)
    pbkdf2_sha256$ITERATIONS$SALT$DIGEST   Django's format, so its hashes can be reused

with SALT and DIGEST in base64 (Django's SALT is the text itself). Anything
else, a plain password in particular, is refused when the file is read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable

from .errors import ConfigError

#: scrypt cost of new hashes: 16 MiB and about 0.2-0.4 s, OWASP's minimum
#: (N=2**14, r=8, p=5 is one of its equivalent settings).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 5
#: A file asking for more than this much memory per check is refused.
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_MAX_PBKDF2_ITERATIONS = 10_000_000


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The HASH part of a user-file line for `password` (scrypt, random salt)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches `hashed` (checked by `check_hash` beforehand)."""
    scheme, *fields = hashed.split("$")
    secret = password.encode("utf-8", "surrogateescape")
    if scheme == "scrypt":
        n, r, p, salt, digest = fields
        expected = _unb64(digest)
        computed = hashlib.scrypt(
            secret,
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_MAX_SCRYPT_MEMORY + 1024 * 1024,
        )
    else:  # pbkdf2_sha256
        iterations, salt, digest = fields
        expected = _unb64(digest)
        computed = hashlib.pbkdf2_hmac("sha256", secret, salt.encode("utf-8"), int(iterations))
    return hmac.compare_digest(computed, expected)


def check_hash(hashed: str) -> str | None:
    """What is wrong with `hashed` as a HASH, or None when it is usable."""
    scheme, *fields = hashed.split("$")
    try:
        if scheme == "scrypt" and len(fields) == 5:
            n, r, p = int(fields[0]), int(fields[1]), int(fields[2])
            if n < 2 or n & (n - 1) or r < 1 or p < 1:
                return "scrypt N must be a power of 2, r and p positive"
            if 128 * r * n > _MAX_SCRYPT_MEMORY:
                return "scrypt parameters asking for more than 256 MiB"
            _unb64(fields[3])
            if len(_unb64(fields[4])) < 16:
                return "scrypt digest shorter than 16 bytes"
            return None
        if scheme == "pbkdf2_sha256" and len(fields) == 3:
            if not 1 <= int(fields[0]) <= _MAX_PBKDF2_ITERATIONS:
                return "pbkdf2_sha256 iterations out of range"
            _unb64(fields[2])
            return None
    except (ValueError, binascii.Error):
        return "malformed hash"
    return "not a hashed password (make one with: aserve --hash-password USER)"


def read_password_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{user: hash}`` from a user file; ConfigError naming the file and line."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the user file {name!r}: {exc}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        where = f"{name}, line {number}"
        if not colon or not user:
            raise ConfigError(f"{where}: expected USER:HASH")
        if user in users:
            raise ConfigError(f"{where}: {user!r} appears twice")
        problem = check_hash(hashed)
        if problem is not None:
            raise ConfigError(f"{where}: {problem}")
        users[user] = hashed
    if not users:
        raise ConfigError(f"the user file {name!r} has no users")
    return users


def basic_auth_file(
    path: str | os.PathLike[str], *, remember: int = 1024, concurrency: int = 2
) -> Callable[[str, str], Awaitable[bool]]:
    """An async credential check for `BasicAuthMiddleware` over a user file.

    A browser sends the same credentials with every request, and a slow hash
    cannot run for each: a good pair is remembered (as an HMAC under a key
    made at start, never in the clear) for the next `remember` distinct
    pairs. Hashing runs in worker threads, at most `concurrency` at once, so
    that a flood of wrong guesses queues instead of taking every thread and
    16 MiB each. An unknown user costs a hash too (of a dummy), so timing
    does not tell which names exist.
    """
    users = read_password_file(path)
    key = os.urandom(32)
    dummy = hash_password(secrets.token_urlsafe(16))
    good: dict[bytes, None] = {}  # insertion order: the oldest is dropped first
    gate = asyncio.Semaphore(concurrency)

    async def check(username: str, password: str) -> bool:
        pair = f"{username}\0{password}".encode("utf-8", "surrogateescape")
        mark = hmac.new(key, pair, hashlib.sha256).digest()
        if mark in good:
            return True
        hashed = users.get(username)
        async with gate:
            ok = await asyncio.to_thread(verify_password, password, hashed or dummy)
        if not ok or hashed is None:
            return False
        if len(good) >= remember:
            del good[next(iter(good))]
        good[mark] = None
        return True

    return check


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
