"""How many SMS a second one SmsClient sends from 16 threads, against the SMS sandbox.

    .venv/bin/python bench/sms_drain.py                     # 2,000 sends, 50 ms, 16 threads
    .venv/bin/python bench/sms_drain.py --client sdk        # the official SDK, same load
    .venv/bin/python bench/sms_drain.py --client both --n 3000 --json out.json

The sandbox (`python -m sandbox.sms`) runs as a child process so its CPU does not share
this process's GIL. With 50 ms latency and 16 threads the ceiling is 16 / 0.05 = 320
msg/s; what a client loses below it is its own per-send cost (signing, JSON, HTTP) and
any connection set-up. The sandbox counts the TCP connections it accepted, which shows
whether a client keeps them alive. Nothing here calls a Tencent host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import benchlib as bl  # noqa: E402

from channels.tencent_sms import SmsClient  # noqa: E402
from sandbox.sms import (  # noqa: E402
    DEFAULT_SDK_APP_ID,
    DEFAULT_SECRET_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_SIGN_NAME,
)

TEMPLATE = "1234567"
PARAMS = ["Coffee", "shipped"]
REGION = "ap-guangzhou"


def own_sender(url: str, threads: int) -> tuple[Callable[[str], str], Callable[[], None]]:
    client = SmsClient(url, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, REGION, DEFAULT_SDK_APP_ID,
                       timeout=10.0, pool_size=threads)

    def send(phone: str) -> str:
        return client.send(phone, TEMPLATE, PARAMS, DEFAULT_SIGN_NAME).code or "none"

    return send, client.close


def sdk_sender(url: str, threads: int) -> tuple[Callable[[str], str], Callable[[], None]]:
    """One SDK SmsClient shared by all threads, the way Herald would share one."""
    from tencentcloud.common import credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
        TencentCloudSDKException,
    )
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.sms.v20210111 import models, sms_client

    profile = HttpProfile(protocol="http", endpoint=url.removeprefix("http://"), reqTimeout=10,
                          keepAlive=True)
    client = sms_client.SmsClient(credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY),
                                  REGION, ClientProfile(httpProfile=profile))

    def send(phone: str) -> str:
        req = models.SendSmsRequest()
        req.PhoneNumberSet = [phone]
        req.SmsSdkAppId = DEFAULT_SDK_APP_ID
        req.TemplateId = TEMPLATE
        req.TemplateParamSet = PARAMS
        req.SignName = DEFAULT_SIGN_NAME
        try:
            return str(client.SendSms(req).SendStatusSet[0].Code)
        except TencentCloudSDKException as exc:
            return str(exc.get_code())

    return send, lambda: None


def run(kind: str, sandbox: bl.SandboxChild, n: int, threads: int) -> dict[str, Any]:
    sandbox.control("POST", "reset")
    before = sandbox.control("GET", "stats")["connections_opened"]
    make = own_sender if kind == "own" else sdk_sender
    send, close = make(sandbox.url, threads)
    # Warm-up: open the pool's connections before the clock starts, for both clients.
    warm = [threading.Thread(target=send, args=(f"+86139{i:08d}",)) for i in range(threads)]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    next_index = iter(range(n))

    def worker() -> None:
        local: Counter[str] = Counter()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            local[send(f"+86138{i:08d}")] += 1
        with lock:
            codes.update(local)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    cpu0, start = time.process_time(), time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    close()
    stats = sandbox.control("GET", "stats")
    return {
        "client": kind,
        "n": n,
        "threads": threads,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(n / elapsed, 1),
        "client_cpu_ms_per_msg": round(cpu / n * 1000, 3),
        "codes": dict(codes),
        "accepted": stats["accepted"],
        "connections_opened": stats["connections_opened"] - before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--client", choices=("own", "sdk", "both"), default="own")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each client")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    kinds = ["own", "sdk"] if args.client == "both" else [args.client]
    results = []
    with tempfile.TemporaryDirectory(prefix="sms-bench-") as tmp:
        sandbox = bl.SandboxChild(Path(tmp), "sms", "--latency", str(args.latency),
                                  "--template", f"{TEMPLATE}:{len(PARAMS)}")
        try:
            for _ in range(args.rounds):
                for kind in kinds:
                    result = run(kind, sandbox, args.n, args.threads)
                    results.append(result)
                    print(f"{kind:>4}: {result['msg_per_s']:7.1f} msg/s  "
                          f"({result['n']} in {result['seconds']} s, {args.threads} threads, "
                          f"{args.latency * 1000:.0f} ms latency; client CPU "
                          f"{result['client_cpu_ms_per_msg']} ms/msg; "
                          f"{result['connections_opened']} connections; codes "
                          f"{result['codes']})", flush=True)
        finally:
            sandbox.stop()
    ceiling = args.threads / args.latency if args.latency > 0 else float("inf")
    print(f"ceiling: {ceiling:.0f} msg/s; cores: {os.cpu_count()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
