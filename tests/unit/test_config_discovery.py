"""Configuration found like other Python tools: file, then environment, then options."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.config import discover, find_config, find_project_root
from aqe.errors import ConfigError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose pyproject.toml has [tool.aqe], with a nested subdirectory."""
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "p"\n\n[tool.aqe]\nconnect-timeout = 2.5\nreplicas = 1\n'
    )
    return root


def test_subdirectory_finds_the_projects_file_and_data_dir(project: Path) -> None:
    found = discover(cwd=project / "src" / "pkg", env={})
    assert found.file is not None
    assert found.file.path == project / "pyproject.toml"
    assert found.root == project
    assert found.settings.data_dir == project / ".aqe"
    assert found.settings.connect_timeout == 2.5
    assert found.settings.replicas == 1
    assert found.origins["connect_timeout"] == f"{project / 'pyproject.toml'} [tool.aqe]"
    assert found.origins["data_dir"] == "default"


def test_environment_overrides_the_file_and_options_override_both(project: Path) -> None:
    env = {"AQE_NATS_CONNECT_TIMEOUT": "7", "AQE_DATA_DIR": "/srv/aqe"}
    found = discover(cwd=project, env=env, option_names={"data_dir": "--data-dir"})
    assert found.settings.connect_timeout == 7.0
    assert found.origins["connect_timeout"] == "env AQE_NATS_CONNECT_TIMEOUT"
    assert found.settings.data_dir == Path("/srv/aqe")
    flagged = discover(
        cwd=project,
        env=env,
        option_names={"data_dir": "--data-dir"},
        data_dir="/opt/aqe",
        connect_timeout=None,  # an option not given changes nothing
    )
    assert flagged.settings.data_dir == Path("/opt/aqe")
    assert flagged.origins["data_dir"] == "option --data-dir"
    assert flagged.settings.connect_timeout == 7.0


def test_relative_paths_in_the_file_are_taken_from_its_directory(project: Path) -> None:
    (project / "aqe.toml").write_text('data-dir = "var/aqe"\n')
    (project / "pyproject.toml").write_text('[project]\nname = "p"\n')  # no [tool.aqe]
    found = discover(cwd=project / "src", env={})
    assert found.file is not None
    assert found.file.path == project / "aqe.toml"
    assert found.settings.data_dir == project / "var" / "aqe"
    assert found.origins["data_dir"] == str(project / "aqe.toml")


def test_pyproject_tool_aqe_wins_over_aqe_toml_in_the_same_directory(project: Path) -> None:
    (project / "aqe.toml").write_text("connect-timeout = 9\n")
    config = find_config(project)
    assert config is not None
    assert config.path.name == "pyproject.toml"


def test_nearest_file_wins_walking_up(project: Path) -> None:
    inner = project / "src" / "pkg"
    (inner / "aqe.toml").write_text("connect_timeout = 3\n")
    found = discover(cwd=inner, env={})
    assert found.root == inner
    assert found.settings.connect_timeout == 3.0


def test_without_a_file_the_root_is_the_nearest_pyproject_or_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "a" / "b").mkdir(parents=True)
    assert find_project_root(repo / "a" / "b") == repo
    found = discover(cwd=repo / "a" / "b", env={})
    assert found.file is None
    assert found.settings.data_dir == repo / ".aqe"
    lone = tmp_path / "lone"
    lone.mkdir()
    assert find_project_root(lone) == lone


def test_urls_as_a_list_and_switches_as_booleans(tmp_path: Path) -> None:
    (tmp_path / "aqe.toml").write_text(
        'nats-url = ["nats://a:4222", "nats://b:4222"]\nembedded-token = false\n'
    )
    settings = discover(cwd=tmp_path, env={}).settings
    assert settings.server_urls == ("nats://a:4222", "nats://b:4222")
    assert settings.embedded_token is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nats_ulr = 'nats://x'\n", "unknown aqe setting 'nats_ulr'"),
        ("replicas = [1]\n", "must be a string or a number"),
        ("connect-timeout = true\n", "must not be true or false"),
        ("replicas = 2\n", "must be auto, 1, 3 or 5"),
        ("not toml at all\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_named_in_the_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "aqe.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        discover(cwd=tmp_path, env={})
    assert "aqe.toml" in str(info.value) or "AQE_REPLICAS" in str(info.value)


def test_shown_hides_secrets_and_names_every_origin(tmp_path: Path) -> None:
    (tmp_path / "aqe.toml").write_text('nats-url = "nats://alice:s3cret@host:4222"\n')
    env = {"AQE_NATS_USER": "bob", "AQE_NATS_PASSWORD": "hunter2"}
    rows = {
        name: (value, origin) for name, value, origin in discover(cwd=tmp_path, env=env).shown()
    }
    assert rows["nats_url"] == ("nats://alice:***@host:4222", str(tmp_path / "aqe.toml"))
    assert rows["password"] == ("***", "env AQE_NATS_PASSWORD")
    assert rows["user"] == ("bob", "env AQE_NATS_USER")
    assert rows["replicas"] == ("auto", "default")
    assert "s3cret" not in repr(rows)
    assert "hunter2" not in repr(rows)
