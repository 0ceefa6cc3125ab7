"""One module per scheduled job: dispatch, token_refresh, stale_retry, purge.

Each exposes run(rt, now=...) so a test can call it alone; scheduler.py only wires
them to a clock.
"""
