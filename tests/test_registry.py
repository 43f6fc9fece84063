import pytest

from zsir.registry import Registry, suggest


def test_registry_lookup_is_case_insensitive_and_errors_list_known_names():
    reg = Registry("thing")

    @reg.register("alpha")
    class Alpha:
        pass

    @reg.register("beta")
    class Beta:
        pass

    assert reg.get("ALPHA") is Alpha
    assert "beta" in reg and reg.names() == ["alpha", "beta"]
    with pytest.raises(ValueError, match="unknown thing 'alpah'; known things: alpha, beta. Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("Alpha")(object)


def test_suggest_returns_empty_when_nothing_is_close():
    assert suggest("zzzz", ["rdmd", "cm4ir"]) == ""
    assert "rdmd" in suggest("rdnd", ["rdmd", "cm4ir"])
