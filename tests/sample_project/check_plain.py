"""A plainly broken test and tests that are fine."""


def test_rounding_is_banker():
    """Broken: expects half-up rounding, Python rounds half to even."""
    assert round(2.5) == 3


def test_reverse_words():
    assert " ".join(reversed(["a", "b", "c"])) == "c b a"


def test_dict_merge():
    assert {"a": 1} | {"b": 2} == {"a": 1, "b": 2}
