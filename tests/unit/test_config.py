"""Settings.from_env: defaults, environment, overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.config import DEFAULT_DATA_DIR, Settings, redact_url
from aqe.errors import ConfigError


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("ca", "cert", "key", "creds"):
        path = tmp_path / f"{name}.pem"
        path.write_text("not really pem\n")
        files[name] = path
    return files


def test_defaults_with_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.data_dir == DEFAULT_DATA_DIR == Path(".aqe")
    assert settings.nats_url is None
    assert settings.embedded
    assert settings.server_urls == ()
    assert settings.user is settings.password is settings.token is None
    assert settings.creds_file is settings.tls_ca is settings.tls_cert is settings.tls_key is None
    assert settings.connect_timeout == 5.0


def test_reads_every_variable(tmp_path: Path, pem: dict[str, Path]) -> None:
    env = {
        "AQE_DATA_DIR": str(tmp_path / "data"),
        "AQE_NATS_URL": "nats://a:4222, nats://b:4222",
        "AQE_NATS_USER": "alice",
        "AQE_NATS_PASSWORD": "s3cret",
        "AQE_NATS_TLS_CA": str(pem["ca"]),
        "AQE_NATS_TLS_CERT": str(pem["cert"]),
        "AQE_NATS_TLS_KEY": str(pem["key"]),
        "AQE_NATS_CONNECT_TIMEOUT": "1.5",
    }
    settings = Settings.from_env(env)
    assert settings.data_dir == tmp_path / "data"
    assert not settings.embedded
    assert settings.server_urls == ("nats://a:4222", "nats://b:4222")
    assert (settings.user, settings.password) == ("alice", "s3cret")
    assert (settings.tls_ca, settings.tls_cert, settings.tls_key) == (
        pem["ca"],
        pem["cert"],
        pem["key"],
    )
    assert settings.connect_timeout == 1.5


def test_token_and_creds_are_read(pem: dict[str, Path]) -> None:
    token = "t0k"  # noqa: S105 - not a secret
    assert Settings.from_env({"AQE_NATS_TOKEN": token}).token == token
    assert Settings.from_env({"AQE_NATS_CREDS": str(pem["creds"])}).creds_file == pem["creds"]


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_env({"AQE_NATS_URL": "", "AQE_DATA_DIR": "  ", "AQE_NATS_USER": ""})
    assert settings == Settings()


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.from_env({"AQE_DATA_DIR": "~/aqe"}).data_dir == tmp_path / "aqe"


def test_reads_os_environ_when_no_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQE_NATS_URL", "nats://from-env:4222")
    assert Settings.from_env().nats_url == "nats://from-env:4222"


def test_overrides_win_over_environment(tmp_path: Path) -> None:
    env = {"AQE_NATS_URL": "nats://env:4222", "AQE_DATA_DIR": "/env"}
    settings = Settings.from_env(env, nats_url="nats://flag:4222", data_dir=str(tmp_path))
    assert settings.nats_url == "nats://flag:4222"
    assert settings.data_dir == tmp_path


def test_none_overrides_are_ignored() -> None:
    env = {"AQE_NATS_URL": "nats://env:4222"}
    settings = Settings.from_env(env, nats_url=None, data_dir=None, connect_timeout=None)
    assert settings.nats_url == "nats://env:4222"
    assert settings.data_dir == DEFAULT_DATA_DIR
    assert settings.connect_timeout == 5.0


def test_numeric_override() -> None:
    assert Settings.from_env({}, connect_timeout=0.25).connect_timeout == 0.25


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="nats_ulr"):
        Settings.from_env({}, nats_ulr="nats://typo:4222")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.nats_url = "nats://x:4222"  # type: ignore[misc]


def test_tls_cert_without_key_names_both_variables(pem: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="AQE_NATS_TLS_CERT") as info:
        Settings.from_env({"AQE_NATS_TLS_CERT": str(pem["cert"])})
    assert "AQE_NATS_TLS_KEY" in str(info.value)
    assert str(pem["cert"]) in str(info.value)


def test_tls_key_without_cert_names_both_variables(pem: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="AQE_NATS_TLS_KEY") as info:
        Settings.from_env({"AQE_NATS_TLS_KEY": str(pem["key"])})
    assert "AQE_NATS_TLS_CERT" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "extra"),
    [
        ("AQE_NATS_TLS_CA", {}),
        ("AQE_NATS_TLS_CERT", {"AQE_NATS_TLS_KEY": "KEY"}),
        ("AQE_NATS_TLS_KEY", {"AQE_NATS_TLS_CERT": "CERT"}),
        ("AQE_NATS_CREDS", {}),
    ],
)
def test_missing_file_names_variable_and_path(
    tmp_path: Path, pem: dict[str, Path], variable: str, extra: dict[str, str]
) -> None:
    missing = tmp_path / "nope" / "missing.pem"
    env = {variable: str(missing)}
    env.update({k: str(pem["key"] if v == "KEY" else pem["cert"]) for k, v in extra.items()})
    with pytest.raises(ConfigError, match=variable) as info:
        Settings.from_env(env)
    assert str(missing) in str(info.value)


def test_user_without_password() -> None:
    with pytest.raises(ConfigError, match=r"AQE_NATS_USER.*AQE_NATS_PASSWORD"):
        Settings.from_env({"AQE_NATS_USER": "alice"})


def test_password_without_user() -> None:
    with pytest.raises(ConfigError, match=r"AQE_NATS_PASSWORD.*AQE_NATS_USER"):
        Settings.from_env({"AQE_NATS_PASSWORD": "s3cret"})


def test_two_ways_to_authenticate_are_refused() -> None:
    env = {"AQE_NATS_USER": "alice", "AQE_NATS_PASSWORD": "pw", "AQE_NATS_TOKEN": "t"}
    with pytest.raises(ConfigError, match=r"AQE_NATS_USER.*AQE_NATS_TOKEN"):
        Settings.from_env(env)


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_bad_connect_timeout_names_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="AQE_NATS_CONNECT_TIMEOUT"):
        Settings.from_env({"AQE_NATS_CONNECT_TIMEOUT": value})


def test_url_of_only_commas_is_refused() -> None:
    with pytest.raises(ConfigError, match="AQE_NATS_URL"):
        Settings.from_env({"AQE_NATS_URL": " , "})


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ConfigError, match="AQE_DATA_DIR"):
        Settings.from_env({"AQE_DATA_DIR": str(afile)})


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="AQE_NATS_USER"):
        Settings(user="alice")


def test_constructor_does_not_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQE_NATS_URL", "nats://ignored:4222")
    assert Settings().nats_url is None


def test_repr_hides_password_token_and_url_credentials(pem: dict[str, Path]) -> None:
    password, token = "s3cret", "t0ken"
    secrets = (password, token, "hunter2")
    shown = [
        repr(Settings(nats_url="nats://alice:hunter2@a:4222", user="alice", password=password)),
        str(Settings(nats_url="nats://t0ken@a:4222,nats://b:4222", token=token)),
        repr(Settings(creds_file=pem["creds"])),
    ]
    for text in shown:
        assert not any(secret in text for secret in secrets), text
    assert "password='***'" in shown[0]
    assert "user='alice'" in shown[0]  # what is not secret stays useful
    assert "nats://alice:***@a:4222" in shown[0]
    assert "token='***'" in shown[1]
    assert "creds.pem" in shown[2]  # the path, never the file's contents
    assert "not really pem" not in shown[2]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://a:4222", "nats://a:4222"),
        ("nats://alice:s3cret@a:4222", "nats://alice:***@a:4222"),
        ("tls://t0ken@a:4222, nats://b:1", "tls://***@a:4222, nats://b:1"),
        ("alice:p@ss@a:4222", "alice:***@a:4222"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(("raw", "value"), [("auto", None), ("AUTO", None), ("1", 1), ("3", 3)])
def test_replicas_setting(raw: str, value: int | None) -> None:
    assert Settings.from_env({"AQE_REPLICAS": raw}).replicas == value


@pytest.mark.parametrize("raw", ["2", "three", "0"])
def test_bad_replicas_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="AQE_REPLICAS"):
        Settings.from_env({"AQE_REPLICAS": raw})


@pytest.mark.parametrize(("raw", "value"), [("off", False), ("0", False), ("on", True)])
def test_embedded_token_setting(raw: str, value: bool) -> None:
    assert Settings.from_env({"AQE_EMBEDDED_TOKEN": raw}).embedded_token is value
    assert Settings().embedded_token is True
