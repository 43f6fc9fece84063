"""``zsir priors``: the known priors, whether their weights are cached (and sound), their size, licence and source."""

from __future__ import annotations

import textwrap


def add_parser(sub) -> None:
    p = sub.add_parser("priors", help="list the known priors, their licences and whether their weights are cached")
    p.set_defaults(func=run)


def run(args) -> int:
    """One aligned row per prior (name, cached, size, licence), then its description and source, indented.

    ``cached`` is ``yes`` only for weights that pass a structural check; a damaged cached file shows ``CORRUPT``
    and the problem (delete it and load the prior again to download it anew).
    """
    from zsir.priors import list_priors

    rows = list_priors()
    table = [["name", "cached", "size", "licence"]] + [
        [r["name"], "yes" if r["cached"] else ("CORRUPT" if r["problem"] else "no"), r["size"], r["licence"]]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
        if i == 0:
            continue
        r = rows[i - 1]
        lines = [r["description"], f"source: {r['source']}"] + ([f"problem: {r['problem']}"] if r["problem"] else [])
        for line in lines:
            print(textwrap.fill(line, 116, initial_indent="    ", subsequent_indent="      "))
    return 0
