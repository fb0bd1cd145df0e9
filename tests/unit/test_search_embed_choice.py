"""Which backend and precision an embedder runs: arguments, AQE_EMBED, defaults."""

from __future__ import annotations

import pytest

from aqe.errors import ConfigError
from aqe.search.embed import (
    BACKEND_PRECISIONS,
    DEFAULT_BACKEND,
    DEFAULT_PRECISION,
    default_model_store,
    resolve_backend,
)


def test_nothing_given_is_the_default_and_the_default_is_offered() -> None:
    assert resolve_backend(env={}) == (DEFAULT_BACKEND, DEFAULT_PRECISION)
    assert DEFAULT_PRECISION in BACKEND_PRECISIONS[DEFAULT_BACKEND]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("torch-fp32", ("torch", "fp32")),
        ("torch-bf16", ("torch", "bf16")),
        ("onnx-fp32", ("onnx", "fp32")),
        (" onnx-int8 ", ("onnx", "int8")),
    ],
)
def test_the_environment_names_the_default(value: str, expected: tuple[str, str]) -> None:
    assert resolve_backend(env={"AQE_EMBED": value}) == expected


@pytest.mark.parametrize("value", ["torch-int8", "onnx-bf16", "onnx", "tf-fp32", "int8"])
def test_a_bad_environment_value_names_the_variable_and_the_choices(value: str) -> None:
    with pytest.raises(ConfigError, match=r"AQE_EMBED=.*onnx-int8"):
        resolve_backend(env={"AQE_EMBED": value})


def test_a_precision_alone_picks_the_backend_that_offers_it() -> None:
    torch_default = {"AQE_EMBED": "torch-fp32"}
    assert resolve_backend(precision="bf16", env={}) == ("torch", "bf16")
    assert resolve_backend(precision="int8", env=torch_default) == ("onnx", "int8")
    # fp32 is offered by both: the configured backend keeps it.
    assert resolve_backend(precision="fp32", env=torch_default) == ("torch", "fp32")
    assert resolve_backend(precision="fp32", env={"AQE_EMBED": "onnx-int8"}) == ("onnx", "fp32")


def test_a_backend_alone_gets_its_default_precision() -> None:
    assert resolve_backend(backend="torch", env={"AQE_EMBED": "onnx-int8"}) == ("torch", "fp32")
    assert resolve_backend(backend="onnx", env={"AQE_EMBED": "onnx-fp32"}) == ("onnx", "fp32")
    assert resolve_backend(backend="onnx", env={"AQE_EMBED": "torch-bf16"}) == (
        "onnx",
        BACKEND_PRECISIONS["onnx"][0],
    )


@pytest.mark.parametrize(
    ("backend", "precision", "message"),
    [
        ("torch", "int8", "torch embedding backend offers fp32, bf16, not int8"),
        ("onnx", "bf16", "onnx embedding backend offers fp32, int8, not bf16"),
        ("tensorflow", None, "unknown embedding backend 'tensorflow'"),
        (None, "fp16", "unknown embedding precision 'fp16'"),
    ],
)
def test_impossible_pairs_are_config_errors(
    backend: str | None, precision: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_backend(backend, precision, env={})


def test_model_store_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQE_MODEL_DIR", "/srv/models")
    assert str(default_model_store()) == "/srv/models"
    monkeypatch.delenv("AQE_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/me")
    assert str(default_model_store()) == "/var/cache/me/aqe/models"
