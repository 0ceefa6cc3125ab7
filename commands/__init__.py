"""Every verb: one module per group, the parser in cli.py.

    common.py    exit codes, messages, loading the config, opening the queue
    cli.py       every verb, its options and their help
    database.py  init-db, schema
    check.py     check (--connect, --remote), templates pull; remote.py the comparison
    rows.py      enqueue, list, cancel, retry
    show.py      show ID
    status.py    status
    render.py    render, and the row check enqueue shares with dispatch
    run.py       run (the daemon; --once for cron)
    serve.py     serve (the web side), console-password
    demo.py      demo: everything local, end to end
    holds.py     holds (--lift)

Each verb takes parsed arguments and returns an exit code: 0 ok, 1 runtime failure,
2 bad usage or bad config. Output goes to stdout; problems to stderr.
"""

from commands.common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, VerbError, err, safe_url

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "VerbError", "err", "safe_url"]
