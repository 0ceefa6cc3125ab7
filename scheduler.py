#!/usr/bin/env python3
"""Herald: deliver WeChat subscribe messages from the msg_list table.

    herald run        the daemon (under systemd: see systemd/); also `python scheduler.py run`
    herald serve      the web side: WeChat pushes, SMS callbacks, the console
    herald demo       everything local: SQLite, the sandbox, sample rows
    herald --help     every verb (the parser is commands/cli.py, the verbs commands/)

This file stays thin: it parses the command line and hands it to the verb, turning an
expected failure into one line on stderr and an exit code. The verbs live in
commands/ (run.py, serve.py, demo.py among them); what `run` and `serve` share as
services lives in service/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from peewee import DatabaseError

import commands
from commands.cli import build as build_parser
from config import ConfigError
from db.errors import cause
from logs import install_redaction, redact


def parser() -> argparse.ArgumentParser:
    return build_parser()


def main(argv: list[str] | None = None) -> int:
    # every verb: whatever a library logs (Python's last-resort handler prints warnings
    # to stderr) is redacted like the daemons' own lines
    install_redaction()
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return commands.EXIT_USAGE
    except commands.VerbError as exc:  # an expected failure, said in one sentence
        print(redact(str(exc)), file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # the reader went away (`| head`): not a failure; keep the interpreter's flush at
        # exit from raising again (the Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return commands.EXIT_OK
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback, for operators
        logging.getLogger("herald").debug("failure", exc_info=True)
        text = f"database: {cause(exc)}" if isinstance(exc, DatabaseError) else str(exc)
        print(f"error: {redact(text)}", file=sys.stderr)
        return commands.EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
