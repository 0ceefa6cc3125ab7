"""`python -m sandbox.wechat`: the WeChat sandbox on its own, for trying Herald by hand
and for the benchmarks (which start it as a child process with --port 0 --port-file).
"""

from __future__ import annotations

import argparse

from sandbox.serving import add_listen_arguments, serve_from_command_line, stop_on_signals
from sandbox.wechat.app import Sandbox
from sandbox.wechat.core import DEFAULT_APPID, DEFAULT_SECRET

# Not 8080: that is web.listen's default, where `herald serve` takes pushes (and 9464 and
# 9465 are the metrics and the console), so both can run side by side as the README says.
DEFAULT_PORT = 8081


def _parse_app(text: str) -> tuple[str, str]:
    appid, sep, secret = text.partition(":")
    if not sep or not appid or not secret:
        raise argparse.ArgumentTypeError(f"expected APPID:SECRET, got {text!r}")
    return appid, secret


def _add_templates_file(sandbox: Sandbox, path: str) -> None:
    """Know every subscribe template of a templates.yaml (its data keys as keywords)."""
    from templates import load_templates

    for tpl in load_templates(path).templates.values():
        if tpl.channel == "subscribe" and tpl.template_id:
            sandbox.add_template(tpl.template_id, {i.key: i.key for i in tpl.items},
                                 title=tpl.name, long_term=tpl.long_term,
                                 enums={k: list(v) for k, v in tpl.enums.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.wechat",
        description="A local WeChat token and subscribe-message server for tests and benchmarks.",
    )
    add_listen_arguments(parser, DEFAULT_PORT)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per send")
    parser.add_argument("--token-latency", type=float, default=0.0, help="seconds per token call")
    parser.add_argument("--token-ttl", type=float, default=7200.0)
    parser.add_argument(
        "--app",
        type=_parse_app,
        action="append",
        metavar="APPID:SECRET",
        help=f"may repeat; default {DEFAULT_APPID}:{DEFAULT_SECRET}",
    )
    parser.add_argument("--templates", metavar="FILE",
                        help="a templates.yaml whose subscribe templates the sandbox knows and "
                             "lists (for check --remote and templates pull by hand)")
    parser.add_argument("--push", metavar="URL",
                        help="push events to this receiver like WeChat (e.g. "
                             "http://127.0.0.1:8080/wechat/push); needs --push-token")
    parser.add_argument("--push-token", help="the app's push Token (as in config.yaml)")
    parser.add_argument("--push-aes-key", help="its EncodingAESKey: safe mode (else plain)")
    args = parser.parse_args(argv)

    stop = stop_on_signals()
    sandbox = Sandbox(
        apps=dict(args.app) if args.app else None,
        token_ttl=args.token_ttl,
        latency=args.latency,
        token_latency=args.token_latency,
        host=args.host,
        port=args.port,
    ).start()
    if args.templates:
        _add_templates_file(sandbox, args.templates)
    if args.push:
        if not args.push_token:
            parser.error("--push needs --push-token")
        for appid in sandbox.apps:
            sandbox.push_to(appid, args.push, token=args.push_token,
                            aes_key=args.push_aes_key,
                            mode="safe" if args.push_aes_key else "plain")
    return serve_from_command_line(sandbox, stop, args.port_file)
