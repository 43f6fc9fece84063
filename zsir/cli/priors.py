"""``zsir priors``: the known priors, whether their weights are cached, their size and source."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("priors", help="list the known priors and whether their weights are cached")
    p.set_defaults(func=run)


def run(args) -> int:
    from zsir.priors import list_priors

    rows = [
        [r["name"], "yes" if r["cached"] else "no", r["size"], r["source"], r["description"]] for r in list_priors()
    ]
    head = ["name", "cached", "size", "source", "description"]
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(4)]
    for row in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0
