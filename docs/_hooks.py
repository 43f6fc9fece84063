"""mkdocs hook: give griffe (mkdocstrings) the installed package layout.

zsir installs ``operators/`` as ``zsir.operators`` and ``samplers/`` as ``zsir.samplers`` (``package-dir`` in
pyproject.toml), a mapping that static analysis of the source tree cannot see. Before the build this hook copies
the three folders into ``build/api-src/zsir`` (ignored by git), the search path of mkdocstrings in mkdocs.yml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_SRC = ROOT / "build" / "api-src"


def on_startup(**kwargs) -> None:
    shutil.rmtree(API_SRC, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "weights")
    shutil.copytree(ROOT / "zsir", API_SRC / "zsir", ignore=ignore)
    for sub in ("operators", "samplers"):
        shutil.copytree(ROOT / sub, API_SRC / "zsir" / sub, ignore=ignore)
