"""The README stays true to the tree: every project path it names exists, and the
Layout section lists every top-level module and folder there is."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# made by a run, or not in the repository at all: named in the README on purpose
NOT_IN_TREE = {"demo-run/config.yaml", "log.sql", "sandbox.yaml"}


def _layout() -> str:
    section = README.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def test_every_project_path_in_backticks_exists() -> None:
    named = set(re.findall(r"`([A-Za-z0-9_][A-Za-z0-9_./-]*\.(?:py|yaml|service|md|sql))`",
                           README))
    missing = sorted(p for p in named - NOT_IN_TREE
                     if not p.startswith("/") and not (ROOT / p).exists())
    assert not missing, f"README names files that are not in the tree: {missing}"


def test_the_layout_names_only_what_exists_and_everything_at_the_top() -> None:
    entries = [line.split()[0] for line in _layout().splitlines()
               if line and not line.startswith(" ")]
    assert entries, "no Layout block found"
    missing = [e for e in entries if not (ROOT / e).exists()]
    assert not missing, f"Layout lists what is not in the tree: {missing}"
    listed = {e.rstrip("/") for e in entries}
    top = {p.name for p in ROOT.glob("*.py")} | {
        p.name for p in ROOT.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests"}
    unlisted = sorted(top - listed)
    assert not unlisted, f"Layout leaves out: {unlisted}"


def test_the_layout_names_every_channel_and_job_module() -> None:
    layout = _layout()
    for folder in ("channels", "jobs"):
        for mod in (ROOT / folder).glob("*.py"):
            if mod.stem == "__init__":
                continue
            assert mod.stem in layout, f"Layout does not mention {folder}/{mod.name}"
