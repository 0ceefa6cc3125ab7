"""What `run` and `serve` share as long-running services.

    shell.py    the main thread of both: signals, systemd notify and watchdog, the
                heartbeat row, reload and the templates watch
    wiring.py   the objects both build from a config: the daemon id, the templates
                holder with its in-use guard, the secrets the logs mask
    daemon.py   `run`'s jobs on APScheduler (dispatch, token refresh, recovery, purge,
                events), the send pool and a graceful stop
    processes.py `run` with dispatch.processes above 1: the supervisor of its processes
"""
