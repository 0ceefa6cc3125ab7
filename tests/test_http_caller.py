"""The WeChat client's HTTP call (channels/http.py's Caller), against hostile answers
from a real server on loopback: what it sends, what it refuses to read, where it does not
follow, and that one bad answer leaves the pooled connection usable for the next send.

The Caller skips requests' per-call machinery for speed (bench/drain.py), so each thing
requests used to do for us and Herald still needs has its test here: the JSON body and
its headers, the token's query encoding, timeouts, a proxy from the environment, the
answer cap, and no redirects.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from channels.base import Kind
from channels.wechat_api import ANSWER_MAX, SEND_PATH, WeChatClient

OK = json.dumps({"errcode": 0, "errmsg": "ok", "msgid": 123456789012345678901}).encode()


@dataclass
class Seen:
    method: str
    target: str  # the request line's target: a path, or a whole URL through a proxy
    headers: dict[str, str]
    body: bytes
    connection: int  # which TCP connection (by client port) carried it


@dataclass
class Server:
    """A loopback HTTP/1.1 server (keep-alive) whose answer to each request is `answer`'s."""
    answer: Callable[[BaseHTTPRequestHandler, Seen], None]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    open_connections: set[int] = field(default_factory=set)  # client ports


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes,
           headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for k, v in (headers or {"Content-Length": str(len(body))}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[BaseHTTPRequestHandler, Seen], None],
              tls: ssl.SSLContext | None = None) -> Server:
        state = Server(answer)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:  # one TCP connection, until the client closes it
                state.open_connections.add(self.client_address[1])
                try:
                    super().handle()
                finally:
                    state.open_connections.discard(self.client_address[1])

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers.items()),
                            self.rfile.read(length), self.client_address[1])
                state.seen.append(seen)
                state.answer(self, seen)

            do_GET = do_POST = _any  # noqa: N815 (http.server's names)

            def log_message(self, *args: Any) -> None: ...

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if tls is not None:  # a refused handshake is an OSError that serve_forever skips
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        scheme = "http" if tls is None else "https"
        state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def client_for() -> Iterator[Callable[..., WeChatClient]]:
    clients: list[WeChatClient] = []

    def make(url: str, timeout: float = 5.0) -> WeChatClient:
        clients.append(WeChatClient(url, timeout=timeout))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def test_a_send_is_json_with_its_headers_and_the_token_encoded(serve, client_for):
    server = serve(lambda h, s: _reply(h, 200, OK))
    client = client_for(server.url)
    token = "a&b=c d+e/é"  # every character a query must escape
    body = {"touser": "o-1", "data": {"thing1": {"value": "发货了 ✓"}}}
    ans = client.send(token, body)
    assert ans.kind is Kind.SUCCESS and ans.msgid == "123456789012345678901", ans.reason
    [seen] = server.seen
    assert seen.method == "POST"
    path, _, query = seen.target.partition("?")
    assert path == SEND_PATH
    assert parse_qs(query) == {"access_token": [token]}
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(seen.body))
    assert headers["user-agent"] == "herald/1"
    assert json.loads(seen.body) == body
    assert seen.body.isascii()  # escaped as requests' json= did: any server reads it


def test_sends_reuse_one_pooled_connection(serve, client_for):
    server = serve(lambda h, s: _reply(h, 200, OK))
    client = client_for(server.url)
    for _ in range(5):
        assert client.send("t", {"touser": "o"}).kind is Kind.SUCCESS
    assert len({s.connection for s in server.seen}) == 1


@pytest.mark.parametrize("framing", ["content-length", "close-delimited"])
def test_an_answer_over_the_cap_is_not_read_and_the_next_send_works(serve, client_for,
                                                                    framing):
    big = b"x" * (ANSWER_MAX + 1)

    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        if seen.body and json.loads(seen.body).get("touser") == "big":
            if framing == "content-length":
                _reply(h, 200, big)
            else:  # no length: the body ends when the server closes
                h.close_connection = True
                _reply(h, 200, big, {"Connection": "close"})
        else:
            _reply(h, 200, OK)

    server = serve(answer)
    client = client_for(server.url)
    ans = client.send("t", {"touser": "big"})
    assert ans.kind is Kind.TRANSIENT and "over 4 MiB" in ans.reason, ans.reason
    after = client.send("t", {"touser": "next"})
    assert after.kind is Kind.SUCCESS, after.reason


def test_a_compressed_answer_that_inflates_past_the_cap_is_cut(serve, client_for):
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB inflated
    assert len(bomb) < 200_000
    server = serve(lambda h, s: _reply(h, 200, bomb, {"Content-Length": str(len(bomb)),
                                                      "Content-Encoding": "gzip"}))
    client = client_for(server.url)
    ans = client.send("t", {"touser": "o"})
    assert "over 4 MiB" in ans.reason, ans.reason


def test_a_redirect_is_an_answer_not_a_place_to_go(serve, client_for):
    elsewhere = serve(lambda h, s: _reply(h, 200, OK))
    server = serve(lambda h, s: _reply(h, 302, b"", {
        "Location": elsewhere.url + SEND_PATH, "Content-Length": "0"}))
    client = client_for(server.url)
    ans = client.send("secret-token", {"touser": "o"})
    assert ans.kind is Kind.TRANSIENT and "HTTP 302" in ans.reason, ans.reason
    assert elsewhere.seen == []  # the token went nowhere else


def test_a_5xx_is_transient_and_its_unread_body_does_not_reach_the_next_send(serve,
                                                                             client_for):
    calls = []

    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        calls.append(1)
        if len(calls) == 1:
            _reply(h, 502, b"<html>bad gateway</html>" * 100)
        else:
            _reply(h, 200, OK)

    server = serve(answer)
    client = client_for(server.url)
    first = client.send("t", {"touser": "o"})
    assert first.kind is Kind.TRANSIENT and "502" in first.reason, first.reason
    assert client.send("t", {"touser": "o"}).kind is Kind.SUCCESS
    assert len(server.seen) == 2


def test_a_silent_server_times_out_and_a_closed_port_is_refused(serve, client_for):
    gate = threading.Event()
    server = serve(lambda h, s: gate.wait(10))
    try:
        ans = client_for(server.url, timeout=0.3).send("t", {"touser": "o"})
    finally:
        gate.set()
    assert ans.kind is Kind.TRANSIENT and ans.timed_out, ans.reason
    assert "timed out" in ans.reason

    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    refused = client_for(f"http://127.0.0.1:{port}").send("t", {"touser": "o"})
    assert refused.kind is Kind.TRANSIENT and not refused.timed_out
    assert f"connection refused (127.0.0.1:{port})" in refused.reason, refused.reason


def test_a_proxy_from_the_environment_carries_the_send(serve, client_for, monkeypatch):
    proxy = serve(lambda h, s: _reply(h, 200, OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    client = client_for("http://api.weixin.invalid")
    ans = client.send("tok", {"touser": "o"})
    assert ans.kind is Kind.SUCCESS, ans.reason
    [seen] = proxy.seen
    parts = urlsplit(seen.target)  # a proxy is asked for the whole URL
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "api.weixin.invalid",
                                                        SEND_PATH)


def test_a_body_that_is_not_json_is_refused_before_anything_is_sent(serve, client_for):
    server = serve(lambda h, s: _reply(h, 200, OK))
    ans = client_for(server.url).send("t", {"touser": "o", "n": float("nan")})
    assert ans.kind is Kind.PERMANENT and "not JSON" in ans.reason, ans.reason
    assert server.seen == []


def test_a_closed_client_closes_its_connections_and_can_send_again(serve, client_for):
    server = serve(lambda h, s: _reply(h, 200, OK))
    client = client_for(server.url)
    assert client.send("t", {"touser": "o"}).kind is Kind.SUCCESS
    [first] = {s.connection for s in server.seen}
    assert first in server.open_connections
    client.close()  # a reload replaces the client: its connections must not linger
    deadline = time.monotonic() + 5
    while first in server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first not in server.open_connections, "the closed client's connection is open"
    assert client.send("t", {"touser": "o"}).kind is Kind.SUCCESS


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself, and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_is_verified_and_a_private_ca_bundle_is_honoured(serve, client_for, tmp_path,
                                                             monkeypatch):
    """WeChat is reached over HTTPS: a certificate nobody vouches for is refused, and
    REQUESTS_CA_BUNDLE (read when the client is made) lets a private CA through."""
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(lambda h, s: _reply(h, 200, OK), tls=context)
    https = server.url
    assert https.startswith("https://127.0.0.1:")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    refused = client_for(https).send("t", {"touser": "o"})
    assert refused.kind is Kind.TRANSIENT and "TLS error" in refused.reason, refused.reason
    assert "CERTIFICATE_VERIFY_FAILED" in refused.reason, refused.reason
    assert server.seen == []
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    trusted = client_for(https).send("t", {"touser": "o"})
    assert trusted.kind is Kind.SUCCESS, trusted.reason
    assert len(server.seen) == 1


def _answer_bytes(msgid: str) -> bytes:
    body = json.dumps({"errcode": 0, "errmsg": "ok", "msgid": msgid}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# Answers whose framing is broken or hostile, each written raw: (bytes, whether the server
# closes after them, the kind of Answer the send must come back with).
FRAMINGS: dict[str, tuple[bytes, bool, Kind]] = {
    "chunk size not hex": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\n{}\r\n0\r\n\r\n", False, Kind.TRANSIENT),
    "chunk cut short": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{}",
                        True, Kind.TRANSIENT),
    "chunk size of 2^112": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + b"f" * 28 + b"\r\n{}", True, Kind.TRANSIENT),
    "chunk trailer of 100 KB": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"2\r\n{}\r\n0\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
                                False, Kind.TRANSIENT),
    "length over the body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", True,
                             Kind.TRANSIENT),
    "two lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\n{}",
                    False, Kind.TRANSIENT),
    "negative length": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" + OK, True,
                        Kind.SUCCESS),  # no usable length: the body ends at the close
    "HTTP/1.0 without length": (b"HTTP/1.0 200 OK\r\n\r\n" + OK, True, Kind.SUCCESS),
    "101 headers": (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"Content-Length: 2\r\n\r\n{}",
                    False, Kind.TRANSIENT),
    "header line of 70 KB": (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000
                             + b"\r\nContent-Length: 2\r\n\r\n{}", False, Kind.TRANSIENT),
    "status line not HTTP": (b"HTTX/1.1 200 OK\r\n\r\n", True, Kind.TRANSIENT),
    "status 99": (b"HTTP/1.1 99 Hm\r\nContent-Length: 2\r\n\r\n{}", False, Kind.TRANSIENT),
    "nothing": (b"", True, Kind.TRANSIENT),
    "gzip that is not": (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n"
                         b"\r\nabcde", False, Kind.TRANSIENT),
    "deflate that is not": (b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n"
                            b"Content-Length: 5\r\n\r\nabcde", False, Kind.TRANSIENT),
    "21 content codings": (b"HTTP/1.1 200 OK\r\nContent-Encoding: " + b"gzip, " * 20
                           + b"gzip\r\nContent-Length: 5\r\n\r\nabcde", False, Kind.TRANSIENT),
}


@pytest.mark.parametrize("name", list(FRAMINGS))
def test_a_broken_framing_is_an_answer_and_the_next_send_works(serve, client_for, name):
    raw, close, kind = FRAMINGS[name]

    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        if json.loads(seen.body)["touser"] == "odd":
            h.close_connection = close
            h.wfile.write(raw)
        else:
            _reply(h, 200, OK)

    server = serve(answer)
    client = client_for(server.url, timeout=2.0)
    odd = client.send("t", {"touser": "odd"})
    assert odd.kind is kind and not odd.timed_out, odd.reason
    after = client.send("t", {"touser": "next"})
    assert after.kind is Kind.SUCCESS, after.reason


@pytest.mark.parametrize("length", ["\xb2", "4\xb9"])
def test_a_length_of_latin_1_superscript_digits_is_an_answer_not_an_exception(
        serve, client_for, length):
    """'²'.isdigit() is true and int('²') a ValueError: a cap check that trusts isdigit()
    raised out of call(), past every `except` of the send."""
    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        if json.loads(seen.body)["touser"] == "odd":
            h.close_connection = True  # no usable length: the body ends at the close
            _reply(h, 200, OK, {"Content-Length": length, "Connection": "close"})
        else:
            _reply(h, 200, OK)

    server = serve(answer)
    client = client_for(server.url)
    odd = client.send("t", {"touser": "odd"})
    assert odd.kind is Kind.SUCCESS and odd.msgid == "123456789012345678901", odd.reason
    assert client.send("t", {"touser": "next"}).kind is Kind.SUCCESS


@pytest.mark.parametrize("status", [b"101 Switching Protocols", b"103 Early Hints",
                                    b"204 No Content", b"304 Not Modified"])
def test_an_answer_without_a_body_leaves_nothing_for_the_next_send_to_read(
        serve: Callable[..., Server], client_for: Callable[..., WeChatClient],
        status: bytes) -> None:
    """http.client takes any 1xx but 100 for the answer (the real one follows a 103
    Early Hints on the same connection, once the server has it), and 204 and 304 for
    answers without a body. What comes after them on that connection answers no send of
    ours: the connection must not carry the next send, or the next send takes the first
    one's answer (its msgid, its errcode) for its own."""
    owed: dict[int, bytes] = {}  # by connection: bytes the server sends when next asked

    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        late = owed.pop(seen.connection, b"")
        if json.loads(seen.body)["touser"] == "first":
            h.wfile.write(b"HTTP/1.1 " + status + b"\r\nLink: </hint>\r\n\r\n")
            owed[seen.connection] = _answer_bytes("111")  # the first send's real answer
        else:
            h.wfile.write(late + _answer_bytes("222"))

    server = serve(answer)
    client = client_for(server.url)
    first = client.send("t", {"touser": "first"})
    assert first.kind is Kind.TRANSIENT and first.msgid is None, first.reason
    assert f"HTTP {status[:3].decode()}" in first.reason, first.reason
    second = client.send("t", {"touser": "second"})
    assert second.kind is Kind.SUCCESS and second.msgid == "222", (second.msgid,
                                                                    second.reason)


def test_a_connection_the_server_closed_while_idle_is_not_reused(serve, client_for):
    """Servers close keep-alive connections that sat idle (nginx's keepalive_timeout)
    without saying so in the answer: the next send takes a fresh connection."""
    import socket

    closed = threading.Event()

    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        _reply(h, 200, OK)  # keep-alive: nothing says this connection will close
        if json.loads(seen.body)["touser"] == "first":
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            closed.set()

    server = serve(answer)
    client = client_for(server.url)
    assert client.send("t", {"touser": "first"}).kind is Kind.SUCCESS
    assert closed.wait(5)
    after = client.send("t", {"touser": "second"})
    assert after.kind is Kind.SUCCESS, after.reason
    assert len({s.connection for s in server.seen}) == 2


@pytest.mark.parametrize("where", ["status line", "chunk size line"])
def test_a_server_echoing_the_request_line_in_broken_framing_leaks_no_token(serve,
                                                                           client_for,
                                                                           where):
    """The reason of a framing error quotes the server's bytes; a server that echoes
    the request line puts the token there (a token no TokenManager registered: only its
    shape, access_token=, can mask it)."""
    token = "echoed-token-" + "q" * 24

    def answer(h: BaseHTTPRequestHandler, seen: Seen) -> None:
        line = f"{seen.method} {seen.target} HTTP/1.1".encode()
        h.close_connection = True
        if where == "status line":
            h.wfile.write(line + b"\r\n\r\n")
        else:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + line + b"\r\n")

    server = serve(answer)
    ans = client_for(server.url).send(token, {"touser": "o"})
    assert ans.kind is Kind.TRANSIENT, ans.reason
    assert SEND_PATH in ans.reason, ans.reason  # the echo is there, the token is not
    assert "q" * 8 not in ans.reason, ans.reason


def test_https_through_a_connect_proxy_keeps_the_token_inside_tls(
        serve: Callable[..., Server], client_for: Callable[..., WeChatClient], tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY from the environment: the Caller tunnels (CONNECT, with the proxy's
    credentials from its URL), and the proxy sees ciphertext only."""
    import base64
    import socket

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    origin = serve(lambda h, s: _reply(h, 200, OK), tls=context)

    heads: list[bytes] = []
    upstream_bytes = bytearray()  # what the client sent through the tunnel
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    upstream_bytes.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def proxy() -> None:
        while True:
            try:
                client_sock, _ = listener.accept()
            except OSError:
                return  # the listener closed: the test is over
            head = b""
            while b"\r\n\r\n" not in head:
                head += client_sock.recv(65536)
            heads.append(head)
            host, _, port = head.split()[1].decode().rpartition(":")
            up = socket.create_connection((host, int(port)))
            client_sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=pipe, args=(client_sock, up, True), daemon=True).start()
            threading.Thread(target=pipe, args=(up, client_sock, False), daemon=True).start()

    threading.Thread(target=proxy, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        monkeypatch.setenv("HTTPS_PROXY", f"http://herald:p%40ss@127.0.0.1:{port}")
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
        token = "tunnelled-token-0123456789"
        ans = client_for(origin.url).send(token, {"touser": "o"})
    finally:
        listener.close()
    assert ans.kind is Kind.SUCCESS, ans.reason
    [head] = heads
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"CONNECT {urlsplit(origin.url).netloc} "), lines
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'herald:p@ss').decode()}" in lines
    [seen] = origin.seen
    assert parse_qs(urlsplit(seen.target).query) == {"access_token": [token]}
    assert token.encode() not in upstream_bytes and upstream_bytes  # ciphertext went by


def test_with_no_ca_bundle_set_the_send_trusts_what_requests_trusts(serve, client_for,
                                                                   tmp_path, monkeypatch):
    """With no bundle set, requests checks a certificate against its own bundle
    (requests.adapters.DEFAULT_CA_BUNDLE_PATH, certifi's), not the system's store
    (OpenSSL's defaults, SSL_CERT_FILE): a host without the system's CA certificates
    still reaches WeChat, and a CA added to the system store vouches for nothing here.
    The Caller trusts the same."""
    import requests.adapters

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(lambda h, s: _reply(h, 200, OK), tls=context)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    # the system store vouches for the server, requests' bundle does not: refused
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    refused = client_for(server.url).send("t", {"touser": "o"})
    assert refused.kind is Kind.TRANSIENT, refused.reason
    assert "CERTIFICATE_VERIFY_FAILED" in refused.reason, refused.reason
    assert server.seen == []
    # requests' bundle vouches for it, the system store does not: trusted
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-file.pem"))
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", cert)
    trusted = client_for(server.url).send("t", {"touser": "o"})
    assert trusted.kind is Kind.SUCCESS, trusted.reason
    assert len(server.seen) == 1


@pytest.mark.parametrize("answer", [b"{}", b'{"msgid": 5}', b'{"errmsg": "ok"}'])
def test_a_send_answer_without_an_errcode_is_not_a_delivery(serve, client_for, answer):
    """Every send endpoint answers with an errcode: a `{}` from a proxy or a broken
    gateway must not mark the row delivered (the token endpoints succeed without one)."""
    server = serve(lambda h, s: _reply(h, 200, answer))
    ans = client_for(server.url).send("t", {"touser": "o"})
    assert ans.kind is Kind.TRANSIENT and "has no errcode" in ans.reason, ans.reason
    assert ans.msgid is None
