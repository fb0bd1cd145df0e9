"""A bridge node's NATS settings: the AQE_NATS_* variables, no secret in a shown URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.bridge._nats import nats_settings, redact_urls
from aqe.bridge.config import load_config
from aqe.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://alice:s3cret@10.0.0.1:4222", "nats://***@10.0.0.1:4222"),
        ("tls://tok%40en@h:1,nats://h2:2", "tls://***@h:1,nats://h2:2"),
        (
            "cannot connect to nats://u:p@h:4222: refused",
            "cannot connect to nats://***@h:4222: refused",
        ),
        ("nats://h:4222", "nats://h:4222"),
        ("mail me at x@y.z", "mail me at x@y.z"),
    ],
)
def test_redact_urls_hides_the_user_part(text: str, shown: str) -> None:
    assert redact_urls(text) == shown


def test_the_variables_are_honoured(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    cert = tmp_path / "c.pem"
    key = tmp_path / "c.key"
    for path in (ca, cert, key):
        path.write_text("x")
    env = {
        "AQE_NATS_TOKEN": "tok",
        "AQE_NATS_TLS_CA": str(ca),
        "AQE_NATS_TLS_CERT": str(cert),
        "AQE_NATS_TLS_KEY": str(key),
        "AQE_NATS_CONNECT_TIMEOUT": "2.5",
        "AQE_NATS_URL": "nats://elsewhere:1",  # the config's nats_url wins
    }
    settings = nats_settings("tls://h:4222", tmp_path, env)
    assert settings.nats_url == "tls://h:4222"
    assert settings.token == env["AQE_NATS_TOKEN"]
    assert (settings.tls_ca, settings.tls_cert, settings.tls_key) == (ca, cert, key)
    assert settings.connect_timeout == 2.5
    assert settings.data_dir == tmp_path


def test_credentials_in_the_url_move_out_of_it(tmp_path: Path) -> None:
    settings = nats_settings(
        "nats://al%3Aice:p%40ss@h:1, nats://al%3Aice:p%40ss@h2:2", tmp_path, {}
    )
    assert settings.nats_url == "nats://h:1,nats://h2:2"
    assert (settings.user, settings.password, settings.token) == ("al:ice", "p@ss", None)
    token = nats_settings("nats://s3cret@h:1", tmp_path, {})
    assert (token.nats_url, token.token, token.user) == ("nats://h:1", "s3cret", None)


@pytest.mark.parametrize(
    ("url", "env", "reason"),
    [
        ("nats://u:p1@h:1,nats://u:p2@h:2", {}, "carry different credentials"),
        ("nats://u:p1@h:1", {"AQE_NATS_TOKEN": "t"}, "AQE_NATS_TOKEN is set too"),
        ("nats://u:p1@h:1", {"AQE_NATS_TLS_CA": "/no/such/ca.pem"}, "no such file"),
    ],
)
def test_conflicts_are_config_errors_that_show_no_secret(
    tmp_path: Path, url: str, env: dict[str, str], reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        nats_settings(url, tmp_path, env)
    assert "p1" not in str(info.value)
    assert "p2" not in str(info.value)


def test_config_errors_and_repr_show_no_secret(tmp_path: Path) -> None:
    body = (
        'cluster = "a"\ndata_dir = "d"\n[listen]\nhost = "127.0.0.1"\nport = 0\n'
        '[tls]\nca = "ca.pem"\ncert = "a.pem"\nkey = "a.key"\n'
    )
    path = tmp_path / "a.toml"
    path.write_text('nats_url = "nats://u:s3cret@h:1"\n' + body)
    assert "s3cret" not in repr(load_config(path))
    path.write_text('nats_url = "http://u:s3cret@h:1"\n' + body)
    with pytest.raises(ConfigError, match=r"got 'http://\*\*\*@h:1'") as info:
        load_config(path)
    assert "s3cret" not in str(info.value)
