"""Order-dependent tests through shared state, with their polluter and state-setter."""

from sample_state import REGISTRY, SETTINGS


def test_parse_numbers():
    assert [int(x) for x in ["1", "2", "3"]] == [1, 2, 3]


def test_load_settings():
    """The state-setter: loads the settings the brittle test needs (and passes)."""
    SETTINGS["currency"] = "EUR"
    assert SETTINGS["currency"] == "EUR"


def test_format_name():
    assert "ada lovelace".title() == "Ada Lovelace"


def test_register_user():
    """The polluter: leaves a user behind in the shared registry (and passes)."""
    REGISTRY["ada"] = "admin"
    assert "ada" in REGISTRY


def test_join_paths():
    assert "/".join(["a", "b"]) == "a/b"


def test_price_in_currency():
    """Brittle: fails alone, passes once test_load_settings has run."""
    assert SETTINGS.get("currency") == "EUR", "settings were never loaded"


def test_slugify():
    assert "Hello World".lower().replace(" ", "-") == "hello-world"


def test_registry_starts_empty():
    """The victim: passes alone, fails after test_register_user."""
    assert REGISTRY == {}, f"registry already holds {sorted(REGISTRY)}"
