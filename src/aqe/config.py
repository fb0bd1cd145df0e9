"""Settings: where aqe keeps its data and which NATS server it talks to.

Settings are found the way other Python tools find theirs (:meth:`Settings.discover`),
each source overriding the one before:

1. defaults;
2. a file: walking up from the current directory, the first directory holding a
   ``pyproject.toml`` with a ``[tool.aqe]`` table or an ``aqe.toml`` (the
   ``pyproject.toml`` wins when a directory has both); keys are the field names below,
   with ``-`` or ``_``;
3. the environment (``AQE_*`` variables);
4. command-line options.

The directory holding that file is the *project root*; with no such file, it is the
nearest directory holding a ``pyproject.toml`` or ``.git``, else the current directory.
The default data directory is ``<project root>/.aqe``, and relative paths in the file
are taken from the file's directory, so any subdirectory of a project shares one data
directory (and one embedded server). Paths from the environment or the command line
are relative to the current directory, as usual for them. :meth:`Settings.from_env`
reads the environment only (no files), which keeps tests hermetic.

With no ``AQE_NATS_URL`` aqe runs its own embedded nats-server under the data
directory; with one it connects to that server or cluster.

============================  ======================  =====================================
variable                      field                   meaning
============================  ======================  =====================================
``AQE_DATA_DIR``              ``data_dir``            projections, embedded server (``./.aqe``)
``AQE_NATS_URL``              ``nats_url``            server URL(s), comma-separated; unset
                                                      means "use the embedded server"
``AQE_NATS_USER``             ``user``                user name (needs a password)
``AQE_NATS_PASSWORD``         ``password``            password
``AQE_NATS_TOKEN``            ``token``               token authentication
``AQE_NATS_CREDS``            ``creds_file``          ``.creds`` file (JWT + nkey seed)
``AQE_NATS_TLS_CA``           ``tls_ca``              CA bundle to verify the server
``AQE_NATS_TLS_CERT``         ``tls_cert``            client certificate (needs the key)
``AQE_NATS_TLS_KEY``          ``tls_key``             client key (needs the certificate)
``AQE_NATS_CONNECT_TIMEOUT``  ``connect_timeout``     seconds per connection attempt (5)
``AQE_REPLICAS``              ``replicas``            replicas of every stream: ``auto``
                                                      (R3 on a cluster, R1 on one server),
                                                      or 1, 3, 5 (``auto``)
``AQE_EMBEDDED_TOKEN``        ``embedded_token``      the embedded server requires a token
                                                      kept in ``DATA_DIR/server/token``
                                                      (mode 0600); ``off`` to let anyone
                                                      on the machine connect (``on``)
============================  ======================  =====================================

Authentication and TLS settings apply to ``AQE_NATS_URL`` only; the embedded server
listens on loopback and takes its generated token transparently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

from aqe.errors import ConfigError

__all__ = [
    "DEFAULT_DATA_DIR",
    "ENV_VARS",
    "ConfigFile",
    "Discovered",
    "Settings",
    "discover",
    "find_config",
    "find_project_root",
    "redact_url",
]

DEFAULT_DATA_DIR: Final = Path(".aqe")
"""Data directory used when neither ``AQE_DATA_DIR`` nor an override names one."""

ENV_VARS: Final[Mapping[str, str]] = {
    "data_dir": "AQE_DATA_DIR",
    "nats_url": "AQE_NATS_URL",
    "user": "AQE_NATS_USER",
    "password": "AQE_NATS_PASSWORD",
    "token": "AQE_NATS_TOKEN",
    "creds_file": "AQE_NATS_CREDS",
    "tls_ca": "AQE_NATS_TLS_CA",
    "tls_cert": "AQE_NATS_TLS_CERT",
    "tls_key": "AQE_NATS_TLS_KEY",
    "connect_timeout": "AQE_NATS_CONNECT_TIMEOUT",
    "replicas": "AQE_REPLICAS",
    "embedded_token": "AQE_EMBEDDED_TOKEN",
}
"""Field name → environment variable that sets it."""

_PATH_FIELDS: Final = frozenset({"data_dir", "creds_file", "tls_ca", "tls_cert", "tls_key"})
_FILE_FIELDS: Final = ("creds_file", "tls_ca", "tls_cert", "tls_key")

OverrideValue = str | float | os.PathLike[str] | None

_REPLICA_CHOICES: Final = (1, 3, 5)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_SECRET_FIELDS: Final = frozenset({"password", "token"})
_HIDDEN: Final = "***"


def redact_url(url: str) -> str:
    """A server URL (or comma-separated URLs) fit to print: passwords and tokens hidden.

    ``nats://alice:s3cret@host:4222`` becomes ``nats://alice:***@host:4222`` and
    ``nats://t0ken@host`` (a token) becomes ``nats://***@host``.
    """
    shown = []
    for part in url.split(","):
        scheme, sep, rest = part.partition("://")
        if not sep:
            scheme, rest = "", part
        userinfo, at, host = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:{_HIDDEN}@{host}" if colon else f"{_HIDDEN}@{host}"
        shown.append(f"{scheme}{sep}{rest}")
    return ",".join(shown)


def _name(field_name: str) -> str:
    """Return how errors name a setting: its variable and its field."""
    return f"{ENV_VARS[field_name]} ({field_name})"


@dataclass(frozen=True)
class Settings:
    """Where aqe keeps its data and how it reaches NATS.

    Construct it with :meth:`from_env` in applications; the plain constructor does not read
    the environment, which keeps tests hermetic. Both validate.

    Attributes:
        data_dir: Directory for projections and the embedded server's files.
        nats_url: Server URL, or a comma-separated list for a cluster; ``None`` means aqe
            starts and manages an embedded nats-server under ``data_dir``.
        user: User name for user/password authentication.
        password: Password for ``user``.
        token: Token for token authentication.
        creds_file: NATS ``.creds`` file (decentralised JWT authentication).
        tls_ca: CA bundle used to verify the server's certificate.
        tls_cert: Client certificate for mutual TLS.
        tls_key: Private key of ``tls_cert``.
        connect_timeout: Seconds allowed for one connection attempt.
        replicas: Replicas every stream gets; ``None`` ("auto") follows the
            deployment: 3 on a cluster, 1 on a single (or the embedded) server.
        embedded_token: Whether the embedded server requires its generated token.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    nats_url: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout: float = 5.0
    replicas: int | None = None
    embedded_token: bool = True

    def __repr__(self) -> str:
        """The settings with secrets hidden: passwords, tokens and URL credentials."""
        parts = []
        for item in fields(self):
            name = item.name
            value = getattr(self, name)
            if name in _SECRET_FIELDS and value is not None:
                value = _HIDDEN
            elif name == "nats_url" and value is not None:
                value = redact_url(value)
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def __post_init__(self) -> None:
        """Check that the settings are usable together.

        Raises:
            ConfigError: A setting is missing its partner, conflicts with another, names
                a file that does not exist, or has an impossible value.
        """
        if self.nats_url is not None and not self.server_urls:
            raise ConfigError(f"{_name('nats_url')} is set but names no server")
        if self.user is not None and self.password is None:
            raise ConfigError(f"{_name('user')} is set but {_name('password')} is not")
        if self.password is not None and self.user is None:
            raise ConfigError(f"{_name('password')} is set but {_name('user')} is not")
        methods = [
            name
            for name, value in (
                ("user", self.user),
                ("token", self.token),
                ("creds_file", self.creds_file),
            )
            if value is not None
        ]
        if len(methods) > 1:
            shown = " and ".join(_name(m) for m in methods)
            raise ConfigError(f"choose one way to authenticate: {shown} are all set")
        if (self.tls_cert is None) != (self.tls_key is None):
            have, missing = (
                ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            )
            raise ConfigError(
                f"{_name(have)} is set to {getattr(self, have)} but {_name(missing)} is not; "
                "a client certificate needs its key"
            )
        for field_name in _FILE_FIELDS:
            path = getattr(self, field_name)
            if path is not None and not path.is_file():
                raise ConfigError(f"{_name(field_name)}: no such file: {path}")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"{_name('data_dir')}: not a directory: {self.data_dir}")
        if self.replicas is not None and self.replicas not in _REPLICA_CHOICES:
            raise ConfigError(f"{_name('replicas')} must be auto, 1, 3 or 5, not {self.replicas}")
        if not math.isfinite(self.connect_timeout) or self.connect_timeout <= 0:
            raise ConfigError(
                f"{_name('connect_timeout')} must be a positive number of seconds, "
                f"not {self.connect_timeout}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: OverrideValue) -> Settings:
        """Build settings from ``AQE_*`` variables with keyword overrides on top.

        Empty variables count as unset. Overrides use field names; an override of ``None``
        is ignored, so CLI options that were not given can be passed straight through.

        Args:
            env: The environment to read; ``os.environ`` when omitted.
            **overrides: Field values that win over the environment (paths may be
                strings).

        Returns:
            Validated settings.

        Raises:
            ConfigError: A variable or override is malformed or the settings do not
                validate; the message names the variable.
            TypeError: An override names no field of :class:`Settings`.
        """
        source: Mapping[str, str] = os.environ if env is None else env
        unknown = sorted(set(overrides) - set(ENV_VARS))
        if unknown:
            raise TypeError(f"Settings.from_env() got unknown settings: {', '.join(unknown)}")

        values: dict[str, object] = {}
        for field_name, variable in ENV_VARS.items():
            override = overrides.get(field_name)
            if override is not None:
                values[field_name] = _coerce(field_name, override, variable)
                continue
            raw = source.get(variable, "").strip()
            if raw:
                values[field_name] = _coerce(field_name, raw, variable)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def embedded(self) -> bool:
        """Whether aqe should run its own nats-server (no ``nats_url`` configured)."""
        return self.nats_url is None

    @property
    def server_urls(self) -> tuple[str, ...]:
        """The URLs in ``nats_url``, split on commas; empty when embedded."""
        if self.nats_url is None:
            return ()
        return tuple(url.strip() for url in self.nats_url.split(",") if url.strip())


def _coerce(field_name: str, value: OverrideValue, variable: str) -> object:
    """Turn a raw variable or override into the field's type."""
    if value is None:
        return None
    if field_name in _PATH_FIELDS:
        if isinstance(value, float | int):
            raise ConfigError(f"{variable} ({field_name}) must be a path, not {value!r}")
        return Path(value).expanduser()
    if field_name == "replicas":
        text = str(value).strip().lower()
        if text == "auto":
            return None
        if text not in {str(n) for n in _REPLICA_CHOICES}:
            raise ConfigError(f"{variable} ({field_name}) must be auto, 1, 3 or 5, not {value!r}")
        return int(text)
    if field_name == "embedded_token":
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ConfigError(f"{variable} ({field_name}) must be on or off, not {value!r}")
        return text in _TRUE
    if field_name == "connect_timeout":
        if isinstance(value, os.PathLike):
            raise ConfigError(f"{variable} ({field_name}) must be a number of seconds, not a path")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(
                f"{variable} ({field_name}) must be a number of seconds, not {value!r}"
            ) from None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


# -- discovery: files, environment, options ----------------------------------------------

PYPROJECT: Final = "pyproject.toml"
AQE_TOML: Final = "aqe.toml"
_ROOT_MARKERS: Final = (PYPROJECT, ".git")


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file that was found, and the settings it holds.

    Attributes:
        path: The file (``pyproject.toml`` or ``aqe.toml``).
        values: Its settings by field name, as written (not yet checked).
    """

    path: Path
    values: Mapping[str, object]

    @property
    def root(self) -> Path:
        """The project root: the directory holding the file."""
        return self.path.parent

    @property
    def label(self) -> str:
        """How ``aqe config`` names this source."""
        return f"{self.path} [tool.aqe]" if self.path.name == PYPROJECT else str(self.path)


@dataclass(frozen=True)
class Discovered:
    """Settings with where each came from.

    Attributes:
        settings: The validated settings.
        origins: Field name → ``default``, ``env AQE_…``, ``option --…`` or the file's
            label.
        root: The project root (see the module docstring).
        file: The configuration file used, if any.
    """

    settings: Settings
    origins: Mapping[str, str]
    root: Path
    file: ConfigFile | None

    def shown(self) -> list[tuple[str, str, str]]:
        """(field, value fit to print, origin) for every setting; secrets hidden."""
        rows = []
        for item in fields(self.settings):
            value = getattr(self.settings, item.name)
            if item.name in _SECRET_FIELDS and value is not None:
                text = _HIDDEN
            elif item.name == "nats_url" and value is not None:
                text = redact_url(value)
            elif item.name == "replicas" and value is None:
                text = "auto"
            elif item.name == "embedded_token":
                text = "on" if value else "off"
            else:
                text = "-" if value is None else str(value)
            rows.append((item.name, text, self.origins[item.name]))
        return rows


def _read_toml(path: Path) -> dict[str, object]:
    import tomllib

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _aqe_table(path: Path) -> Mapping[str, object] | None:
    """The aqe settings in ``path``, or None when a pyproject.toml has no [tool.aqe]."""
    data = _read_toml(path)
    if path.name == PYPROJECT:
        tool = data.get("tool")
        table = tool.get("aqe") if isinstance(tool, dict) else None
        if table is None:
            return None
    else:
        table = data
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.aqe] must be a table")
    values: dict[str, object] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in ENV_VARS:
            known = ", ".join(k.replace("_", "-") for k in ENV_VARS)
            raise ConfigError(f"{path}: unknown aqe setting {key!r} (known: {known})")
        values[name] = value
    return values


def find_config(start: Path) -> ConfigFile | None:
    """The nearest configuration file at or above ``start`` (see the module docstring)."""
    for directory in (start, *start.parents):
        for name in (PYPROJECT, AQE_TOML):
            path = directory / name
            if path.is_file():
                values = _aqe_table(path)
                if values is not None:
                    return ConfigFile(path=path, values=values)
    return None


def find_project_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding a pyproject.toml or .git."""
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in _ROOT_MARKERS):
            return directory
    return start


def _from_file(config: ConfigFile, field_name: str) -> OverrideValue:
    """One file value as an override: lists of URLs joined, paths from the file's dir."""
    value = config.values[field_name]
    where = f"{config.label}: {field_name.replace('_', '-')}"
    if field_name == "nats_url" and isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if isinstance(value, bool):
        if field_name != "embedded_token":
            raise ConfigError(f"{where} must not be true or false")
        return "on" if value else "off"
    if not isinstance(value, str | int | float):
        raise ConfigError(f"{where} must be a string or a number, not {value!r}")
    if field_name in _PATH_FIELDS and isinstance(value, str):
        path = Path(value).expanduser()
        return path if path.is_absolute() else config.root / path
    return value if isinstance(value, str | float) else str(value)


def discover(
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    option_names: Mapping[str, str] | None = None,
    **overrides: OverrideValue,
) -> Discovered:
    """Settings from defaults, the project's file, the environment and options, in order.

    Args:
        cwd: Where to start looking for the file; the current directory when omitted.
        env: The environment to read; ``os.environ`` when omitted.
        option_names: How the command line spells each override (``data_dir`` →
            ``--data-dir``), for :attr:`Discovered.origins`.
        **overrides: Field values from the command line; ``None`` means not given.

    Returns:
        The validated settings, with the origin of each.

    Raises:
        ConfigError: A file is not valid TOML, names an unknown setting or has a value
            of the wrong kind, or the settings do not validate.
        TypeError: An override names no field of :class:`Settings`.
    """
    here = (cwd or Path.cwd()).resolve()
    source: Mapping[str, str] = os.environ if env is None else env
    config = find_config(here)
    root = config.root if config is not None else find_project_root(here)
    values: dict[str, OverrideValue] = {"data_dir": root / DEFAULT_DATA_DIR}
    origins = {name: "default" for name in ENV_VARS}
    if config is not None:
        for name in config.values:
            values[name] = _from_file(config, name)
            origins[name] = config.label
    unknown = sorted(set(overrides) - set(ENV_VARS))
    if unknown:
        raise TypeError(f"discover() got unknown settings: {', '.join(unknown)}")
    spelled = option_names or {}
    for name, variable in ENV_VARS.items():
        if source.get(variable, "").strip():
            values.pop(name, None)  # the environment wins over the file: from_env reads it
            origins[name] = f"env {variable}"
        if overrides.get(name) is not None:
            values[name] = overrides[name]
            origins[name] = f"option {spelled.get(name, name)}"
    return Discovered(
        settings=Settings.from_env(source, **values),
        origins=origins,
        root=root,
        file=config,
    )
