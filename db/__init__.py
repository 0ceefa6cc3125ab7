"""Storage: the only place SQL and engine differences live.

The database opened from the configured URL (connection.open_database) is the one
handle: the Runtime holds it and every function here takes it explicitly; the models
are bound to none. Nothing outside db/ writes SQL or names an engine
(tests/test_seams.py).

urls.py        read a database URL (its engine, its file, its parameters)
drivers.py     the connection classes: reconnects, UTC sessions, timestamp forms
dialects.py    one Dialect per engine: claims, grouped writes, locks, upserts, what
               the console and the verbs need per engine
connection.py  open a database from a URL
schema.py      create and upgrade the schema; ddl/ the reference DDL per engine
models.py      peewee models (bound to no database) and the UTC timestamp field
decode.py      one row at a time, so one unreadable row fails alone
claim.py       move due rows wait -> sending; leases; expiry
outcomes.py    write send results back, checking the row is still ours
queue.py       read-only summaries (status, metrics)
rows.py        the verbs' rows: insert, list, show, the fallback chain
ops.py         retry and cancel (verbs and console)
console.py     the console's read-only queries
inbox.py       the push inbox: storing pushes, applying them (jobs/events.py)
grants.py, holds.py, heartbeat.py, tokens.py, purge.py, stale.py
               one table or one job's statements each
errors.py      what a database error means, in one sentence
wakeup.py      PostgreSQL LISTEN/NOTIFY
"""
