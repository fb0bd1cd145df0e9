"""How a bridge node reaches its own cluster's NATS, and how it shows that address.

A node authenticates to NATS exactly like every other aqe command: the ``AQE_NATS_*``
settings of :class:`aqe.config.Settings` (user and password, token, creds file, TLS CA,
client certificate and key), with the config file's ``nats_url`` as the server list.
Credentials written into that URL (``nats://user:pass@host``, ``nats://token@host``)
are taken out of it and passed as settings, so the URL the node connects with, logs
and writes to ``status.json`` never carries a secret; :func:`redact_urls` hides the
user part of any URL in text the node shows (``nats://***@host``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

from aqe.config import ENV_VARS, Settings
from aqe.errors import ConfigError

__all__ = ["REDACTED", "nats_settings", "redact_urls"]

REDACTED: Final = "***"
"""What stands in for a URL's user part wherever a URL is shown."""

_USERINFO: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s,'\"]*@")
_AUTH_FIELDS: Final = ("user", "token", "creds_file")


def redact_urls(text: str) -> str:
    """``text`` with the ``user:password@`` (or ``token@``) part of every URL hidden."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def nats_settings(nats_url: str, data_dir: Path, env: Mapping[str, str] | None = None) -> Settings:
    """The settings a node connects to ``nats_url`` with.

    Args:
        nats_url: The config's ``nats_url`` (comma-separated URLs, maybe with
            credentials in them).
        data_dir: The node's data directory.
        env: The environment to read ``AQE_NATS_*`` from (``os.environ`` if None).

    Returns:
        Settings whose ``nats_url`` carries no credentials; credentials that were in
        the URL are in ``user``/``password`` (or ``token`` for ``nats://token@host``).

    Raises:
        ConfigError: URLs with different credentials, credentials both in the URL and
            in an ``AQE_NATS_*`` variable, or settings that do not validate (a TLS file
            that does not exist, say); the message never shows a secret.
    """
    urls: list[str] = []
    found: set[tuple[str, str | None]] = set()
    for raw in nats_url.split(","):
        url = raw.strip()
        if not url:
            continue
        parts = urlsplit(url)
        if parts.username is not None or "@" in parts.netloc:
            found.add(
                (
                    unquote(parts.username or ""),
                    None if parts.password is None else unquote(parts.password),
                )
            )
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=host))
        urls.append(url)
    clean = ",".join(urls)
    overrides: dict[str, str] = {}
    if found:
        if len(found) > 1:
            raise ConfigError(
                f"nats_url {redact_urls(nats_url)}: its URLs carry different credentials"
            )
        [(user, password)] = found
        source = os.environ if env is None else env
        given = [ENV_VARS[f] for f in _AUTH_FIELDS if source.get(ENV_VARS[f], "").strip()]
        if given:
            raise ConfigError(
                f"nats_url {redact_urls(nats_url)} carries credentials and "
                f"{', '.join(given)} is set too: keep them in one place (preferably the "
                "variables)"
            )
        if password is None:
            overrides["token"] = user
        else:
            overrides["user"], overrides["password"] = user, password
    try:
        return Settings.from_env(env, nats_url=clean, data_dir=data_dir, **overrides)
    except ConfigError as exc:
        raise ConfigError(redact_urls(str(exc))) from None
