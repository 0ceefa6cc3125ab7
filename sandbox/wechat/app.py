"""The WeChat sandbox as one server: its parts (one module per API) wired together behind
the `Sandbox` that the tests, the benchmarks and the demo use, the route from each URL
path to the part that answers it, and the /_sandbox/ control API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast
from urllib.parse import parse_qs

from sandbox.serving import Emulator, Handler
from sandbox.wechat.accounts import Accounts
from sandbox.wechat.core import DEFAULT_APPID, DEFAULT_SECRET, Attempt, Core
from sandbox.wechat.faults import Faults
from sandbox.wechat.library import TemplateLibrary
from sandbox.wechat.oa_template import TemplateSend
from sandbox.wechat.pushers import Pushers
from sandbox.wechat.subscribe import DELIVERY_FAILURE, SubscribeSend
from sandbox.wechat.tokens import Tokens
from sandbox.wechat.uniform import UniformSend

T = TypeVar("T")

# Endpoint: (handler, method, query parameters, body)
Endpoint = Callable[[Handler, str, dict[str, str], bytes], None]


class _On(Generic[T]):
    """An attribute of the Sandbox that lives on one of its parts: `sandbox.latency` is
    `sandbox.core.latency`, read and set as before the parts existed."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self.part = part
        self.name = name or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: object, objtype: type | None = None) -> T:
        if obj is None:
            return cast(T, self)
        return cast(T, getattr(getattr(obj, self.part), self.name))

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class _Journal:
    """A deep copy of one list of the sandbox's journal (core.Records), the caller's to
    change: `sandbox.accepted` is every accepted subscribe send."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Sandbox | None, objtype: type | None = None
                ) -> list[dict[str, Any]]:
        if obj is None:
            return cast(list[dict[str, Any]], self)
        return obj.core.snapshot(self.name, deep=True)


def _query(text: str) -> dict[str, str]:
    if not text:
        return {}
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


class Sandbox(Emulator):
    """A WeChat look-alike HTTP server. Use as a context manager or start()/stop()."""

    server_version = "herald-sandbox"
    label = "sandbox"

    # settings, each kept by the part that reads it
    apps = _On[dict[str, str]]("tokens")
    token_ttl = _On[float]("tokens")
    token_latency = _On[float]("tokens")
    templates = _On[dict[str, list[str]] | None]("library")
    template_info = _On[dict[str, dict[str, Any]]]("library")
    pages = _On[set[str] | None]("core")
    latency = _On[float]("core")
    clock = _On[Callable[[], float]]("core")
    official_accounts = _On[set[str]]("accounts")
    oa_templates = _On[dict[str, list[str]] | None]("accounts")
    # what happened
    accepted = _Journal("accepted")  # subscribe sends accepted
    received = _Journal("received")  # every send request as it arrived, in order
    uniform_accepted = _Journal("uniform")
    oa_accepted = _Journal("oa")
    oa_repeats = _Journal("oa_repeats")  # template/send answered from a client_msg_id
    attempts = _On[list[Attempt]]("core")
    token_calls = _On[dict[str, int]]("tokens", "calls")

    def __init__(
        self,
        *,
        apps: dict[str, str] | None = None,
        templates: dict[str, list[str]] | None = None,
        pages: set[str] | None = None,
        token_ttl: float = 7200.0,
        latency: float = 0.0,
        token_latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host, port)
        self.core = core = Core(pages=pages, latency=latency, clock=clock,
                                release=self._release)
        self.tokens = Tokens(core, apps=dict(apps) if apps is not None
                             else {DEFAULT_APPID: DEFAULT_SECRET},
                             token_ttl=token_ttl, token_latency=token_latency)
        self.library = TemplateLibrary(core, self.tokens, templates)
        self.faults = Faults(core)
        self.pushers = Pushers(core)
        self.subscribe = SubscribeSend(core, self.tokens, self.library, self.faults,
                                       self.pushers)
        self.accounts = Accounts(core, self.tokens, self.faults)
        self.uniform = UniformSend(core, self.accounts)
        self.oa = TemplateSend(core, self.accounts, self.pushers)
        self._routes: dict[str, Endpoint] = {
            "/cgi-bin/stable_token": self.tokens.serve_stable,
            "/cgi-bin/token": self.tokens.serve_legacy,
            "/cgi-bin/message/subscribe/send": self.subscribe.serve,
            "/cgi-bin/message/wxopen/template/uniform_send": self.uniform.serve,
            "/cgi-bin/message/template/send": self.oa.serve,
            "/wxaapi/newtmpl/gettemplate": self.library.serve_list,
        }

        # What a test or a tool asks of the parts, as the Sandbox's own methods.
        self.stats = core.stats
        self.reset_records = core.reset_records
        self.add_template = self.library.add_template
        self.remove_template = self.library.remove_template
        self.template_list = self.library.template_list
        self.expire_tokens = self.tokens.expire_all
        self.expire_tokens_after = self.tokens.expire_after
        self.token_answer = self.tokens.answer
        self.inject = self.faults.inject
        self.unsubscribe = self.subscribe.unsubscribe
        self.fail_delivery = self.subscribe.fail_delivery
        self.hold = self.subscribe.hold
        self.release = self.subscribe.release
        self.accepted_count = self.subscribe.accepted_count
        self.concurrency_violations = self.subscribe.concurrency_violations
        self.add_official_account = self.accounts.add_official_account
        self.bind = self.accounts.bind
        self.add_oa_template = self.accounts.add_oa_template
        self.unfollow = self.accounts.unfollow
        self.block = self.oa.block
        self.push_to = self.pushers.push_to
        self.pusher = self.pushers.pusher
        self.popup = self.pushers.popup
        self.change = self.pushers.change
        self.pushes = self.pushers.pushes

    def clear_faults(self) -> None:
        """Drop injected faults and canned token answers that have not fired yet."""
        self.faults.clear()
        self.tokens.clear_answers()

    # --- life cycle (start, url: sandbox/serving.py) -------------------------------------

    def stop(self) -> None:
        self.pushers.stop_all()
        super().stop()

    def _wake(self) -> None:
        self.subscribe.wake_all()

    # --- HTTP ----------------------------------------------------------------------------

    def handle(self, http: Handler, method: str, path: str, query: str, body: bytes
               ) -> None:
        endpoint = self._routes.get(path)
        if endpoint is not None:
            endpoint(http, method, _query(query), body)
        elif path.startswith("/_sandbox/"):
            http.control(method, path[len("/_sandbox/"):], body, self._views(),
                         self._actions())
        else:
            http.reply_json({"error": f"no such endpoint {path}"}, 404)

    def _views(self) -> dict[str, Callable[[], Any]]:
        core = self.core
        return {
            "stats": core.stats,
            "pushes": self.pushers.pushes,
            "channels": lambda: {"uniform": self.uniform_accepted, "oa": self.oa_accepted,
                                 "oa_repeats": self.oa_repeats},
            # Records are never mutated once appended, so serialising outside the lock is
            # safe and keeps a large dump from stalling sends.
            "received": lambda: core.snapshot("received"),
            "accepted": lambda: core.snapshot("accepted"),
        }

    def _actions(self) -> dict[str, Callable[[dict[str, Any]], object]]:
        return {
            "config": self._configure,
            "inject": lambda a: self.inject(a["fault"], times=int(a.get("times", 1)),
                                            openid=a.get("openid"),
                                            endpoint=a.get("endpoint")),
            "expire_tokens": lambda a: self.expire_tokens(),
            "expire_tokens_after": lambda a: self.expire_tokens_after(int(a["n"])),
            "unsubscribe": lambda a: self.unsubscribe(str(a["openid"])),
            "reset": lambda a: self.reset_records(),
            "clear_faults": lambda a: self.clear_faults(),
            "official_account": lambda a: self.add_official_account(
                str(a["appid"]), str(a["secret"]), bound_to=a.get("bound_to")),
            "oa_template": lambda a: self.add_oa_template(str(a["template_id"]),
                                                          list(a["keys"])),
            "unfollow": lambda a: self.unfollow(str(a["openid"])),
            "block": lambda a: self.block(str(a["openid"])),
            "fail_delivery": lambda a: self.fail_delivery(
                str(a["openid"]), int(a.get("error_code", DELIVERY_FAILURE[0])),
                str(a.get("error_status", DELIVERY_FAILURE[1]))),
            "push_config": lambda a: self.push_to(
                str(a["appid"]), str(a["url"]), token=str(a["token"]),
                aes_key=a.get("aes_key"), fmt=str(a.get("format", "xml")),
                mode=str(a.get("mode", "plain"))),
            "popup": lambda a: self.popup(str(a["appid"]), str(a["openid"]), _results(a),
                                          str(a.get("scene", "0"))),
            "change": lambda a: self.change(str(a["appid"]), str(a["openid"]), _results(a)),
            "hold": lambda a: self.hold(str(a["openid"])),
            "release": lambda a: self.release(a.get("openid")),
            "token_answer": lambda a: self.token_answer(dict(a["payload"]),
                                                        times=int(a.get("times", 1))),
        }

    def _configure(self, args: dict[str, Any]) -> None:
        if "latency" in args:
            self.latency = float(args["latency"])
        if "token_latency" in args:
            self.token_latency = float(args["token_latency"])


def _results(args: dict[str, Any]) -> dict[str, str]:
    results = args["results"]
    if not isinstance(results, dict):
        raise TypeError("results maps template ids to accept or reject")
    return results
