"""Storage: the msg_list queue and the shared access_token table.

models.py      peewee models and the UTC timestamp field
connection.py  open a database from a URL, create the schema
claim.py       move due rows wait -> sending, per dialect
outcomes.py    write send results back, checking the row is still ours
ddl/           reference DDL per dialect (what init-db runs)
"""
