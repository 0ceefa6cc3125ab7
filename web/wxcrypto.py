"""WeChat message-push signatures and the safe-mode AES cipher (pure: no I/O).

Facts and worked examples: shared notes/events.md and the official "消息推送" page.

- Handshake and plaintext pushes: ``signature = sha1(sorted([token, timestamp, nonce]))``.
- Safe mode: ``msg_signature = sha1(sorted([token, timestamp, nonce, Encrypt]))``, then
  AES-256-CBC with key = b64decode(EncodingAESKey + "="), IV = key[:16] and a PKCS#7 pad
  to a multiple of 32 (not AES's 16), over ``random(16) + len(msg)(4, big endian) + msg +
  appid``.

Errors never carry payload bytes, the key or the ciphertext: a push body may hold user
data, and reasons end up in logs and in the inbox's error column. Errors are raised
outside the ``except`` block that noticed them, so no ``__context__`` drags the original
exception (and the data it may quote) into a traceback either.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct
from base64 import b64decode, b64encode

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeChat's PKCS#7 block (K = 32 in the doc), not the AES block of 16
KEY_CHARS = 43
RANDOM_LEN = 16
LEN_FIELD = struct.Struct(">I")  # msg_len: 4 bytes, network byte order


class PushCryptoError(ValueError):
    """A push that must be refused; ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signature(token: str, timestamp: str, nonce: str, *more: str) -> str:
    """sha1 hex of the sorted, concatenated strings.

    Three values give the handshake/plaintext ``signature``; with the Encrypt value as
    ``more`` it is the safe-mode ``msg_signature``. Sorting str by code point is the same
    as sorting their UTF-8 bytes, so non-ASCII tokens sort as WeChat sorts them.
    """
    joined = "".join(sorted((token, timestamp, nonce, *more)))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


def check_signature(given: object, token: object, timestamp: object, nonce: object,
                    *more: object) -> bool:
    """True when ``given`` is the signature of the values; never raises.

    Query parameters may be absent (None), repeated (lists) or garbage: anything that is
    not a str makes the check fail rather than raise. Compared in constant time.
    """
    values = [v for v in (token, timestamp, nonce, *more) if isinstance(v, str)]
    if not isinstance(given, str) or len(values) != 3 + len(more):
        return False
    try:
        expected = signature(*values)
        # bytes, not str: compare_digest raises TypeError on non-ASCII str
        return hmac.compare_digest(expected.encode("ascii"),
                                   given.lower().encode("utf-8", "replace"))
    except Exception:  # lone surrogates from a WSGI query string, say: answer, not raise
        return False


def _aes_key(encoding_aes_key: object) -> bytes | str:
    """The 32-byte AES key, or a reason (which never quotes the key)."""
    if not isinstance(encoding_aes_key, str):
        return "EncodingAESKey must be a string"
    if len(encoding_aes_key) != KEY_CHARS:
        return (f"EncodingAESKey must be {KEY_CHARS} characters, "
                f"got {len(encoding_aes_key)}")
    try:
        key = b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        return "EncodingAESKey is not base64"
    if len(key) != 32:  # a key that itself ends in "=" decodes short
        return "EncodingAESKey does not decode to 32 bytes"
    return key


class PushCipher:
    """Safe-mode decryption (receiver) and encryption (sandbox) for one app.

    The key lives only inside the ``cryptography`` Cipher object; repr and str show the
    appid alone.
    """

    __slots__ = ("_cipher", "appid", "_appid_bytes")

    def __init__(self, encoding_aes_key: str, appid: str) -> None:
        key = _aes_key(encoding_aes_key)
        if isinstance(key, str):
            raise ValueError(key)
        if not isinstance(appid, str) or not appid or not appid.isascii():
            raise ValueError("appid must be a non-empty ASCII string")
        self.appid = appid
        self._appid_bytes = appid.encode("ascii")
        # A Cipher object hands out a fresh context per call, so one instance serves
        # concurrent requests.
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def __repr__(self) -> str:
        return f"PushCipher(appid={self.appid!r})"

    __str__ = __repr__

    def decrypt(self, encrypt_b64: str) -> bytes:
        """The msg inside an ``Encrypt`` value, after checking the appid inside.

        Call only after ``msg_signature`` has been verified: the signature authenticates
        the ciphertext, which is why the padding check below need not be constant time.
        """
        outcome = self._open(encrypt_b64)
        if isinstance(outcome, str):
            raise PushCryptoError(outcome)
        return outcome

    def _open(self, encrypt_b64: object) -> bytes | str:
        """The msg, or a reason for refusing it (returned, so nothing is chained)."""
        if not isinstance(encrypt_b64, str):
            return "Encrypt is not text"
        try:
            data = b64decode(encrypt_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            return "Encrypt is not base64"
        if not data or len(data) % 16:
            return "ciphertext length is not a multiple of 16"
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or pad > len(plain):
            return "bad padding"
        if plain[-pad:] != bytes((pad,)) * pad:
            return "bad padding"
        content = plain[:-pad]
        head = RANDOM_LEN + LEN_FIELD.size
        if len(content) < head:
            return "plaintext too short"
        (msg_len,) = LEN_FIELD.unpack_from(content, RANDOM_LEN)
        if head + msg_len > len(content):
            return "msg_len beyond the data"
        if not hmac.compare_digest(content[head + msg_len:], self._appid_bytes):
            # Name the app we expected, never what we found: that is decrypted payload.
            return f"the appid inside is not {self.appid}"
        return content[head:head + msg_len]

    def encrypt(self, msg: bytes, *, random16: bytes | None = None) -> str:
        """The ``Encrypt`` value WeChat would send for ``msg`` (deterministic when
        ``random16`` is given, for tests and the doc's known answers)."""
        if random16 is None:
            random16 = os.urandom(RANDOM_LEN)
        if len(random16) != RANDOM_LEN:
            raise ValueError(f"random16 must be {RANDOM_LEN} bytes")
        full = random16 + LEN_FIELD.pack(len(msg)) + msg + self._appid_bytes
        pad = BLOCK - len(full) % BLOCK  # 1..32: a full block when already aligned
        encryptor = self._cipher.encryptor()
        data = encryptor.update(full + bytes((pad,)) * pad) + encryptor.finalize()
        return b64encode(data).decode("ascii")
