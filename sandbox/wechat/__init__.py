"""A local stand-in for WeChat's API, on 127.0.0.1: tokens, subscribe messages, the
official accounts' template messages (uniform_send, template/send), the template
library, message push and injected faults.

Herald's tests, its `demo` verb and its benchmarks all talk to this server instead of
api.weixin.qq.com. It answers the way WeChat does (HTTP 200 with an errcode in JSON, the
same checks in the same order, msgids above 2**53), records what it accepted so a test can
assert on deliveries, and lets the caller inject the failures a real network and a real
WeChat produce: errcodes, 5xx pages, HTML where JSON was expected, hangs and resets.

One module per API, each owning its state, wired together by app.py into the one
`Sandbox` everything uses:

- core.py: the lock, clock, journal and msgids every API shares
- tokens.py: /cgi-bin/stable_token and /cgi-bin/token, and the token check
- library.py: the subscribe templates (newtmpl) and /wxaapi/newtmpl/gettemplate
- subscribe.py: /cgi-bin/message/subscribe/send
- accounts.py: official accounts, their templates and followers, and the send path
  uniform.py (uniform_send) and oa_template.py (template/send) share
- pushers.py: each app's message push set-up (sandbox/pusher.py pushes)
- faults.py: injected failures
- cli.py: `python -m sandbox.wechat` (the HTTP plumbing: sandbox/serving.py)

Built for a benchmark of ~1,000 sends a second over 64 keep-alive connections on two
cores: the per-request path is kept short and the shared lock is never held across the
simulated latency.
"""

from sandbox.wechat.app import Sandbox
from sandbox.wechat.cli import main
from sandbox.wechat.core import DEFAULT_APPID, DEFAULT_SECRET, FIRST_MSGID, Attempt

__all__ = [
    "DEFAULT_APPID",
    "DEFAULT_SECRET",
    "FIRST_MSGID",
    "Attempt",
    "Sandbox",
    "main",
]
