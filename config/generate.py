"""Write config.yaml and docs/configuration.md from the declarations in config/model.py.

    python -m config.generate           write both (in the repository this file is in)
    python -m config.generate --check   write nothing; exit 1 naming each file that differs

tests/test_config_docs.py runs the check's comparison, so a key changed in model.py
alone, or a hand edit of either file, fails the suite until this is run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .reference import configuration_md
from .sample import config_yaml
from .schema import SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def generated() -> dict[Path, str]:
    """Each generated file (relative to the repository) and the text it must hold."""
    return {Path("config.yaml"): config_yaml(SCHEMA.root),
            Path("docs") / "configuration.md": configuration_md(SCHEMA.root)}


def stale(root: Path = ROOT) -> list[Path]:
    """The generated files whose content differs from what the declarations give."""
    out = []
    for relative, text in generated().items():
        path = root / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(relative)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from the declarations")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        for relative in differ:
            print(f"{relative} differs from config/model.py (run python -m config.generate)",
                  file=sys.stderr)
        return 1 if differ else 0
    for relative, text in generated().items():
        path = ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
