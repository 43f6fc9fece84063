"""mkdocs hook: hand mkdocstrings the installed package layout, with docstrings in its Markdown dialect.

zsir installs ``operators/`` as ``zsir.operators`` and ``samplers/`` as ``zsir.samplers`` (``package-dir`` in
pyproject.toml), a mapping that static analysis of the source tree cannot see. Before the build this hook copies
the three folders into ``build/api-src/zsir`` (ignored by git), the search path of mkdocstrings in mkdocs.yml, and
rewrites the copies' docstrings (never the sources) in three ways:

* Sphinx roles become mkdocstrings cross-references: ``:class:`~zsir.operators.SVDOperator``` ->
  ``[`SVDOperator`][zsir.operators.SVDOperator]``, a bare ``:func:`name``` -> ``[`name`][name]`` (resolved in the
  scope of the documented object). ``mkdocs build --strict`` then fails on a reference that does not resolve.
* reST ``.. math::`` blocks become MathJax display blocks (``$$ \\begin{aligned} ... $$``), one per paragraph.
* Google-style arguments documented together (``sigma_min, sigma_max: ...``) get one entry per name, so griffe can
  check every documented name against the signature.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_SRC = ROOT / "build" / "api-src"
_ROLE = re.compile(r":(?:func|class|meth|data|mod|attr|exc|obj):`(~?)([\w.]+)(\(\))?`")
_EXTERNAL = ("os.", "torch.", "numpy.", "np.", "math.")
_GROUP = re.compile(r"^(\s+)(\*{0,2}\w+(?:, \*{0,2}\w+)+): (.*)$")
_MATH = re.compile(r"^(?P<ind>[ \t]*)\.\. math::\n\n(?P<body>(?:(?P=ind)[ \t]+\S.*\n|[ \t]*\n)+)", re.M)


def _math(m: re.Match) -> str:
    ind, out = m.group("ind"), []
    for block in re.split(r"\n[ \t]*\n", m.group("body").strip("\n")):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        out += [f"{ind}$$", f"{ind}\\begin{{aligned}}", *(ind + line for line in lines), f"{ind}\\end{{aligned}}"]
        out += [f"{ind}$$", ""]
    return "\n".join(out) + "\n"


def _role(m: re.Match) -> str:
    short, target = m.group(1), m.group(2)
    text = target.rsplit(".", 1)[-1] if short else target
    if target.startswith(_EXTERNAL):
        return f"``{text}``"
    return f"[`{text}`][{target}]"


def _split_groups(text: str) -> str:
    lines, out, i, section = text.split("\n"), [], 0, None  # section: indent of the current "Args:" line
    while i < len(lines):
        line, indent_of = lines[i], len(lines[i]) - len(lines[i].lstrip())
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            section = indent_of
        elif section is not None and line.strip() and indent_of <= section:
            section = None
        m = _GROUP.match(line) if section is not None else None
        if not m:
            out.append(line)
            i += 1
            continue
        indent, names = m.group(1), m.group(2).split(", ")
        block = [f"{indent}{names[0]}: {m.group(3)}"]
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            block.append(lines[i])
            i += 1
        out += block + [f"{indent}{name}: as ``{names[0]}``." for name in names[1:]]
    return "\n".join(out)


def _rewrite(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    path.write_text(_split_groups(_MATH.sub(_math, _ROLE.sub(_role, source))), encoding="utf-8")


def on_startup(**kwargs) -> None:
    shutil.rmtree(API_SRC, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "weights")
    shutil.copytree(ROOT / "zsir", API_SRC / "zsir", ignore=ignore)
    for sub in ("operators", "samplers"):
        shutil.copytree(ROOT / sub, API_SRC / "zsir" / sub, ignore=ignore)
    for path in API_SRC.rglob("*.py"):
        _rewrite(path)
