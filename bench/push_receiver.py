#!/usr/bin/env python3
"""Push receiver benchmark: how many WeChat pushes `serve` stores and acknowledges per
second, and how long each acknowledgement takes (WeChat gives up after 5 s).

A real `scheduler.py serve` child process (waitress, its events applier running), and C
client threads in this process posting distinct safe-mode (encrypted, signed) JSON
`subscribe_msg_sent_event` pushes as fast as it answers, for N pushes in all. Every push
must be answered `success` and stored exactly once (checked in push_event afterwards).

    python bench/push_receiver.py                         # SQLite, 4,000 pushes, 16 clients
    python bench/push_receiver.py --db postgres --pushes 8000 --clients 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

from db.models import PushEvent  # noqa: E402
from sandbox.push_bodies import build_message, wrap_encrypted  # noqa: E402
from tests.support import ServeProcess, write_config  # noqa: E402
from web.push_events import PushItem, PushMessage  # noqa: E402
from web.wxcrypto import PushCipher  # noqa: E402

TOKEN = "benchPushToken1"
AES_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


def pushes(n: int, appid: str) -> list[tuple[dict[str, str], bytes]]:
    cipher = PushCipher(AES_KEY, appid)
    out = []
    for i in range(n):
        msg = PushMessage(to_user="gh_bench", from_user=bl.openid(i), create_time=1700000000 + i,
                          msg_type="event", event="subscribe_msg_sent_event",
                          items=(PushItem.receipt("TPL", str(1988810812324364291 + i)),))
        # signed now: serve refuses a timestamp outside web.push_max_age
        out.append(wrap_encrypted(cipher, TOKEN, build_message(msg, "json"), "json",
                                  int(time.time()), str(i)))
    return out


def run(dialect: str, n: int, clients: int) -> dict[str, object]:
    with bl.workdir() as work:
        url, db = bl.fresh_database(dialect, work)
        cfg = write_config(work, database=url, web={"listen": "127.0.0.1:0"},
                           console={"listen": None},
                           apps={"default": {"appid": bl.APPID, "secret": bl.SECRET,
                                             "push": {"token": TOKEN, "aes_key": AES_KEY}}})
        bodies = pushes(n, bl.APPID)
        server = ServeProcess(cfg, work / "serve.log").start()
        try:
            server.wait_ready()
            base = server.urls()["push"] + "/wechat/push"
            times: list[float] = []
            bad: list[str] = []
            lock = threading.Lock()
            cursor = iter(range(n))

            def client() -> None:
                session = requests.Session()
                while True:
                    with lock:
                        i = next(cursor, None)
                    if i is None:
                        return
                    query, body = bodies[i]
                    t0 = time.perf_counter()
                    r = session.post(base, params=query, data=body, timeout=10)
                    took = time.perf_counter() - t0
                    with lock:
                        times.append(took)
                        if r.text != "success":
                            bad.append(f"{r.status_code} {r.text[:40]}")

            threads = [threading.Thread(target=client) for _ in range(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            cpu = bl.proc_cpu(server.proc.pid)  # type: ignore[union-attr]
        finally:
            server.stop()
            server.close()
        with db.connection_context():
            stored = PushEvent.select().count()
        times.sort()
        return {"dialect": dialect, "pushes": n, "clients": clients,
                "acks_per_s": round(n / wall), "p50_ms": round(bl.percentile(times, 0.5) * 1000, 1),
                "p99_ms": round(bl.percentile(times, 0.99) * 1000, 1),
                "max_ms": round(times[-1] * 1000, 1), "stored": stored,
                "not_success": len(bad), "serve_cpu_s": round(cpu, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=bl.DIALECTS, default="sqlite")
    p.add_argument("--pushes", type=int, default=4000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    result = run(args.db, args.pushes, args.clients)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    ok = result["stored"] == args.pushes and result["not_success"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
