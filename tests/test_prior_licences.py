"""The licence column states what is known per named prior and claims no licence that the source does not give."""

from __future__ import annotations

from zsir.priors import list_priors


def test_licence_column_states_what_is_known_per_prior():
    rows = {r["name"]: r["licence"] for r in list_priors()}
    # FFHQ ADM (ffhq_10m.pt): the DPS repository has no licence file; the deepinv/diffunet copy says BSD-3-Clause
    assert "no licence file" in rows["ffhq"] and "BSD-3-Clause" in rows["ffhq"] and "MIT" not in rows["ffhq"]
    assert "CC BY-NC-SA 4.0" in rows["ffhq"]
    # consistency models: the code is MIT, the weights have no licence of their own in the model card
    for name in ("bedroom-cm", "cat-cm", "imagenet64-cm"):
        assert rows[name] != "MIT" and "no weights licence" in rows[name]
    assert rows["celebahq"].startswith("Apache-2.0")
    assert all(lic.strip() for lic in rows.values())
