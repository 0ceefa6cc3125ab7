"""web/wxcrypto.py: the doc's worked examples, round trips, and every refusal.

Known answers come from the official mini program page "消息推送"
(developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.html),
worked example of safe mode with JSON, Token "AAAAA", EncodingAESKey "A" * 43 and appid
wxba5fad812f8e6fb9. Summarised in shared notes/events.md.
"""

from __future__ import annotations

import struct
from base64 import b64decode, b64encode

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from web.wxcrypto import PushCipher, PushCryptoError, check_signature, signature

TOKEN = "AAAAA"
DOC_KEY = "A" * 43
DOC_APPID = "wxba5fad812f8e6fb9"
DOC_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPx"
    "LKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMu"
    "FUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDr"
    "M1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
DOC_MSG = (
    b'{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",'
    b'"CreateTime":1714112445,"MsgType":"event","Event":"debug_demo",'
    b'"debug_str":"hello world"}'
)
# the doc's encrypted reply to the push above
DOC_REPLY = (
    "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
)

# A key that is not all zeros, for tests where "the key does not leak" must mean
# something: it decodes to bytes 0..31.
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
RAW_KEY = bytes(range(32))
APPID = "wx0123456789abcdef"
MARKER = b"MARKER-q7Zp-payload"


def raw_encrypt(key: bytes, plain: bytes) -> str:
    """AES-256-CBC (IV = key[:16]) over ``plain`` as given: no padding added, so tests
    can build any plaintext layout by hand, including wrong ones."""
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return b64encode(enc.update(plain) + enc.finalize()).decode()


def layout(msg: bytes, appid: bytes, *, random16: bytes = b"r" * 16,
           msg_len: int | None = None) -> bytes:
    """random + msg_len + msg + appid, not yet padded."""
    n = len(msg) if msg_len is None else msg_len
    return random16 + struct.pack(">I", n) + msg + appid


def pad32(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


# --- signatures -------------------------------------------------------------------------

def test_handshake_example_from_the_doc() -> None:
    assert signature(TOKEN, "1714036504", "1514711492") == (
        "f464b24fc39322e44b38aa78f5edd27bd1441696")
    assert check_signature("f464b24fc39322e44b38aa78f5edd27bd1441696",
                           TOKEN, "1714036504", "1514711492")


def test_plaintext_push_example_from_the_doc() -> None:
    assert signature(TOKEN, "1714037059", "486452656") == (
        "899cf89e464efb63f54ddac96b0a0a235f53aa78")


def test_safe_mode_url_signature_and_msg_signature_from_the_doc() -> None:
    # The safe-mode URL carries both; only msg_signature covers the ciphertext.
    assert signature(TOKEN, "1714112445", "415670741") == (
        "6c5c811b55cc85e0e1b54100749188c20beb3f5d")
    assert signature(TOKEN, "1714112445", "415670741", DOC_ENCRYPT) == (
        "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3")
    assert check_signature("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
                           TOKEN, "1714112445", "415670741", DOC_ENCRYPT)
    # the plain signature does not vouch for the Encrypt value
    assert not check_signature("6c5c811b55cc85e0e1b54100749188c20beb3f5d",
                               TOKEN, "1714112445", "415670741", DOC_ENCRYPT)


def test_reply_msg_signature_from_the_doc() -> None:
    assert signature(TOKEN, "1713424427", "415670741", DOC_REPLY) == (
        "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1")


@pytest.mark.parametrize("given", [
    None, 123, b"f464b24fc39322e44b38aa78f5edd27bd1441696", ["x"], "", "garbage",
    "f464b24fc39322e44b38aa78f5edd27bd1441697", "f464b24fc39322e44b38aa78f5edd27bd144169",
    "ф464b24fc39322e44b38aa78f5edd27bd1441696", "\udcff",
])
def test_check_signature_refuses_wrong_and_garbage(given: object) -> None:
    assert check_signature(given, TOKEN, "1714036504", "1514711492") is False


@pytest.mark.parametrize("args", [
    (None, "1714036504", "1514711492"), (TOKEN, None, "1514711492"),
    (TOKEN, "1714036504", ["1514711492"]), (TOKEN, "1714036504", "1514711492", None),
    ("\udcff", "1714036504", "1514711492"),
])
def test_check_signature_never_raises_on_bad_inputs(args: tuple[object, ...]) -> None:
    assert check_signature("f464b24fc39322e44b38aa78f5edd27bd1441696", *args) is False


def test_check_signature_accepts_uppercase_hex() -> None:
    assert check_signature("F464B24FC39322E44B38AA78F5EDD27BD1441696",
                           TOKEN, "1714036504", "1514711492")


# --- decryption known answers -----------------------------------------------------------

def test_decrypts_the_docs_exact_ciphertext() -> None:
    msg = PushCipher(DOC_KEY, DOC_APPID).decrypt(DOC_ENCRYPT)
    assert msg == DOC_MSG
    assert len(msg) == 167  # the doc's msg_len


def test_doc_ciphertext_layout_matches_the_doc() -> None:
    # Independent of PushCipher: raw AES over the doc's ciphertext shows the doc's
    # random, msg_len, sizes (TmpMsg 224 bytes, FullStr 205) and appid.
    data = b64decode(DOC_ENCRYPT)
    assert len(data) == 224
    dec = Cipher(algorithms.AES(bytes(32)), modes.CBC(bytes(16))).decryptor()
    plain = dec.update(data) + dec.finalize()
    full = plain[:-plain[-1]]
    assert len(full) == 205
    assert full[:16] == b"a8eedb185eb2fecf"
    assert struct.unpack(">I", full[16:20]) == (167,)
    assert full[20:187] == DOC_MSG
    assert full[187:] == DOC_APPID.encode()


def test_encrypts_the_docs_reply_example() -> None:
    # The doc's encrypted reply: random "707722b803182950", msg {"demo_resp":"good luck"}.
    out = PushCipher(DOC_KEY, DOC_APPID).encrypt(b'{"demo_resp":"good luck"}',
                                                 random16=b"707722b803182950")
    assert out == DOC_REPLY


def test_hand_built_vector_with_a_nonzero_key() -> None:
    msg = b'{"Event":"subscribe_msg_sent_event","x":"' + MARKER + b'"}'
    encrypt = raw_encrypt(RAW_KEY, pad32(layout(msg, APPID.encode(), random16=b"0123456789abcdef")))
    cipher = PushCipher(KEY, APPID)
    assert cipher.decrypt(encrypt) == msg
    assert cipher.encrypt(msg, random16=b"0123456789abcdef") == encrypt


@pytest.mark.parametrize("size", [0, 1, 11, 12, 13, 43, 44, 45, 200])
def test_round_trip_across_pad_lengths(size: int) -> None:
    # 20 + size + 18 bytes: sizes 12 and 44 land on a 32-byte boundary (pad = 32).
    cipher = PushCipher(KEY, APPID)
    msg = bytes(range(256))[:size] if size <= 256 else b"x" * size
    enc = cipher.encrypt(msg)
    assert len(b64decode(enc)) % 32 == 0
    assert cipher.decrypt(enc) == msg


def test_random_prefix_differs_per_call() -> None:
    cipher = PushCipher(KEY, APPID)
    one, two = cipher.encrypt(b"same"), cipher.encrypt(b"same")
    assert one != two
    assert cipher.decrypt(one) == cipher.decrypt(two) == b"same"


def test_random16_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        PushCipher(KEY, APPID).encrypt(b"m", random16=b"short")


# --- refusals ---------------------------------------------------------------------------

def _secret_msg() -> bytes:
    return b'{"FromUserName":"' + MARKER + b'"}'


def _hostile_cases() -> dict[str, str | object]:
    msg = _secret_msg()
    app = APPID.encode()
    good = layout(msg, app)
    unpadded = good + b"\x00" * (32 - len(good) % 32)  # zero-filled: last byte 0
    assert len(good) % 32 != 0
    valid = raw_encrypt(RAW_KEY, pad32(good))
    raw = b64decode(valid)

    # 33 or more trailing 0x21 bytes: consistent, so only the 1..32 range refuses it
    pad33 = good + b"\x21" * (33 + (-(len(good) + 33)) % 32)
    assert len(pad33) % 32 == 0
    return {
        "not base64": "%%%" + MARKER.decode() + "%%%",
        "not text": b"bytes",
        "empty": "",
        "truncated (not a multiple of 16)": b64encode(raw[:-5]).decode(),
        "truncated (a block short)": b64encode(raw[:-32]).decode(),
        "pad 0": raw_encrypt(RAW_KEY, unpadded),
        "pad 33": raw_encrypt(RAW_KEY, pad33),
        "inconsistent pad": raw_encrypt(
            RAW_KEY, pad32(good)[:-3] + b"\x01\x03\x03"),
        "msg_len too long": raw_encrypt(
            RAW_KEY, pad32(layout(msg, app, msg_len=len(msg) + len(app) + 1))),
        "msg_len huge": raw_encrypt(RAW_KEY, pad32(layout(msg, app, msg_len=2**32 - 1))),
        "too short": raw_encrypt(RAW_KEY, pad32(b"r" * 10)),
        "other app": raw_encrypt(RAW_KEY, pad32(layout(msg, b"wxffffffffffffffff"))),
        "no appid": raw_encrypt(RAW_KEY, pad32(layout(msg, b""))),
        "wrong key": PushCipher("B" * 43, APPID).encrypt(msg),
    }


@pytest.mark.parametrize("case", sorted(_hostile_cases()))
def test_hostile_ciphertexts_are_refused_without_leaking(case: str) -> None:
    encrypt = _hostile_cases()[case]
    with pytest.raises(PushCryptoError) as caught:
        PushCipher(KEY, APPID).decrypt(encrypt)  # type: ignore[arg-type]
    exc = caught.value
    text = str(exc) + repr(exc) + exc.reason
    assert MARKER.decode() not in text
    assert KEY not in text and repr(RAW_KEY) not in text
    if isinstance(encrypt, str) and encrypt:
        assert encrypt not in text and encrypt[:16] not in text
    # raised from a clean state: no chained exception quoting what it saw
    assert exc.__context__ is None and exc.__cause__ is None
    assert len(exc.reason) < 80


def test_reasons_name_the_failure() -> None:
    cases = _hostile_cases()
    cipher = PushCipher(KEY, APPID)

    def reason(case: str) -> str:
        with pytest.raises(PushCryptoError) as caught:
            cipher.decrypt(cases[case])  # type: ignore[arg-type]
        return caught.value.reason

    assert reason("not base64") == "Encrypt is not base64"
    assert reason("truncated (not a multiple of 16)").startswith("ciphertext length")
    assert reason("pad 0") == "bad padding"
    assert reason("pad 33") == "bad padding"
    assert reason("inconsistent pad") == "bad padding"
    assert reason("msg_len too long") == "msg_len beyond the data"
    assert reason("msg_len huge") == "msg_len beyond the data"
    assert reason("other app") == f"the appid inside is not {APPID}"
    assert reason("no appid") == f"the appid inside is not {APPID}"


def test_wrong_appid_on_the_doc_vector_names_only_the_expected_app() -> None:
    with pytest.raises(PushCryptoError) as caught:
        PushCipher(DOC_KEY, "wx1111111111111111").decrypt(DOC_ENCRYPT)
    text = str(caught.value)
    assert "wx1111111111111111" in text
    assert DOC_APPID not in text and "hello world" not in text and "debug_demo" not in text


# --- the key ----------------------------------------------------------------------------

def test_cipher_repr_and_str_show_the_appid_not_the_key() -> None:
    cipher = PushCipher(KEY, APPID)
    for text in (repr(cipher), str(cipher), f"{cipher}"):
        assert APPID in text
        assert KEY not in text and KEY[:12] not in text and repr(RAW_KEY) not in text
    assert not hasattr(cipher, "__dict__")  # no attribute dump that could hold the key


@pytest.mark.parametrize("bad", [
    KEY[:-1], KEY + "A", "!" * 43, KEY[:-1] + "=", " " + KEY[1:], "é" * 43, None, 43,
])
def test_bad_keys_are_refused_without_echoing_them(bad: object) -> None:
    with pytest.raises(ValueError) as caught:
        PushCipher(bad, APPID)  # type: ignore[arg-type]
    text = str(caught.value) + repr(caught.value)
    assert "EncodingAESKey" in text
    if isinstance(bad, str):
        assert bad not in text and bad[:10] not in text
    assert caught.value.__context__ is None


@pytest.mark.parametrize("bad", ["", None, "wx中文"])
def test_bad_appid_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        PushCipher(KEY, bad)  # type: ignore[arg-type]
