"""Citations in the code and the Markdown files point at documentation that ships with zsir.

Docstrings and comments cite the method pages as ``docs/<page>.md``: every such page must exist. The specification
files zsir was written from (``rdmd.md``, ``cm4ir.md``, ``offline.md``, ``peers.md``, ``ndr.md``, ``DESIGN.md``) are
not part of the project, so a bare reference to one of them is a dangling citation (the pages under docs/ link each
other by relative names such as ``cm4ir.md``, which is fine there).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "build", "site", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "outputs"}
DOCS_PAGE = re.compile(r"\bdocs/[\w./-]+?\.md\b")
SPEC_FILE = re.compile(r"(?<![\w/.-])(?:rdmd|cm4ir|offline|peers|ndr|DESIGN)\.md\b")


def _files() -> list[Path]:
    if not (ROOT / "docs").is_dir():
        pytest.skip("the docs/ folder is not next to the tests (installed without the source tree)")
    return [
        p
        for p in ROOT.rglob("*")
        if p.suffix in (".py", ".md", ".yml", ".toml") and not SKIP.intersection(p.relative_to(ROOT).parts)
    ]


def test_cited_docs_pages_exist():
    missing = sorted(
        f"{p.relative_to(ROOT)}: {m}" for p in _files() for m in DOCS_PAGE.findall(p.read_text(encoding="utf-8"))
        if not (ROOT / m).is_file()
    )  # fmt: skip
    assert not missing, missing


def test_no_citation_of_specification_files_users_do_not_have():
    found = sorted(
        f"{p.relative_to(ROOT)}: {m}" for p in _files() if "docs" not in p.relative_to(ROOT).parts[:1]
        and p != Path(__file__).resolve() for m in SPEC_FILE.findall(p.read_text(encoding="utf-8"))
    )  # fmt: skip
    assert not found, found
