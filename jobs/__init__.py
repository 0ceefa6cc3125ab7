"""One module per scheduled job: dispatch, token_refresh, stale_retry, purge (and what
dispatch asks: fallback, the next hop of a failed row; grant_hold, the grant check).

Each exposes run(rt, now=...) so a test can call it alone; scheduler.py only wires
them to a clock.
"""
