"""Bridge node configs: parsing, defaults, path resolution and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqe.bridge.config import (
    DEFAULT_STREAMS,
    BridgeConfig,
    LinkTuning,
    PeerConfig,
    load_config,
)
from aqe.errors import BridgeConfigError, ConfigError
from aqe.log import StreamSpec, load_stream_specs

OPS = Path(__file__).resolve().parents[2] / "ops" / "bridge"

FULL = """\
cluster = "a"
nats_url = "nats://127.0.0.1:4251"
data_dir = "../state/a"
streams = ["AQE_TESTS", "AQE_PATTERNS"]
partitions = 16
apply_streams = true
status_interval_s = 0.5

[listen]
host = "127.0.0.1"
port = 7451

[tls]
ca = "certs/ca.pem"
cert = "certs/a.pem"
key = "/abs/a.key"

[[peers]]
name = "b"
address = "127.0.0.1:7452"

[[peers]]
name = "c"
address = "[::1]:7453"
server_name = "c.example"
trusted_relay = true

[link]
max_in_flight = 100
max_batch = 50
keepalive_s = 2
idle_timeout_s = 10.0
connect_timeout_s = 3.0
reconnect_min_s = 0.1
reconnect_max_s = 4.0
gossip_s = 0.5
repair_after_s = 2.5
relay = false
"""

MINIMAL = """\
cluster = "a"
nats_url = "nats://127.0.0.1:4251"
data_dir = "state"
[listen]
host = "127.0.0.1"
port = 7451
[tls]
ca = "ca.pem"
cert = "a.pem"
key = "a.key"
"""


def write(tmp_path: Path, text: str, name: str = "a.toml") -> Path:
    path = tmp_path / "conf" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def error_of(tmp_path: Path, text: str) -> BridgeConfigError:
    path = write(tmp_path, text)
    with pytest.raises(BridgeConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def test_full_config_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)
    here = path.parent
    assert config.path == path
    assert config.cluster == "a"
    assert config.nats_url == "nats://127.0.0.1:4251"
    assert config.data_dir == (tmp_path / "state" / "a").resolve()
    assert config.status_path == config.data_dir / "status.json"
    assert config.streams == ("AQE_TESTS", "AQE_PATTERNS")
    assert config.partitions == 16
    assert config.apply_streams is True
    assert config.status_interval_s == 0.5
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 7451)
    assert config.tls.ca == here.resolve() / "certs" / "ca.pem"
    assert config.tls.cert == here.resolve() / "certs" / "a.pem"
    assert config.tls.key == Path("/abs/a.key")
    assert config.peers == (
        PeerConfig(name="b", host="127.0.0.1", port=7452, server_name="b"),
        PeerConfig(name="c", host="::1", port=7453, server_name="c.example", trusted_relay=True),
    )
    assert config.trusted_relays == ("c",)  # b may send only its own chains
    assert config.peers[1].address == "[::1]:7453"
    assert config.peer("c").server_name == "c.example"
    with pytest.raises(KeyError):
        config.peer("z")
    assert config.link == LinkTuning(
        max_in_flight=100,
        max_batch=50,
        keepalive_s=2.0,
        idle_timeout_s=10.0,
        connect_timeout_s=3.0,
        reconnect_min_s=0.1,
        reconnect_max_s=4.0,
        gossip_s=0.5,
        repair_after_s=2.5,
        relay=False,
    )
    assert isinstance(config.link.keepalive_s, float)


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.streams == DEFAULT_STREAMS == ("AQE_TESTS", "AQE_PATTERNS", "AQE_LEARNING")
    assert config.partitions == 8
    assert config.apply_streams is False
    assert config.status_interval_s == 1.0
    assert config.peers == ()
    assert config.link == LinkTuning()
    assert config.data_dir == (tmp_path / "conf" / "state").resolve()


def test_relative_paths_do_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/a.toml"))
    assert config.tls.ca == (tmp_path / "conf" / "ca.pem").resolve()
    assert config.data_dir.is_absolute()
    assert config.path == Path("conf/a.toml")
    assert load_config(path).tls == config.tls


def test_port_zero_listens_on_a_free_port(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, replace(MINIMAL, "port = 7451", "port = 0")))
    assert config.listen.port == 0


def test_streams_checked_against_given_specs(tmp_path: Path) -> None:
    specs = [StreamSpec(name="X", subjects=("x.>",))]
    # "streams" must precede the tables in TOML, so it goes at the top.
    text = 'streams = ["X"]\n' + MINIMAL
    config = load_config(write(tmp_path, text), specs=specs)
    assert config.streams == ("X",)


def test_error_is_a_config_error_with_fields(tmp_path: Path) -> None:
    error = error_of(tmp_path, replace(MINIMAL, 'cluster = "a"', 'cluster = "a b"'))
    assert isinstance(error, ConfigError)
    assert isinstance(error, ValueError)
    assert error.field == "cluster"
    assert "'a b' is not a valid name" in error.reason
    assert error.path == tmp_path / "conf" / "a.toml"


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ('cluster = "a"\n', "", "cluster", "missing (required)"),
        ('cluster = "a"', "cluster = 1", "cluster", "expected a string, got int 1"),
        ('cluster = "a"', 'cluster = ""', "cluster", "must not be empty"),
        ('cluster = "a"', 'cluster = "a.b"', "cluster", "not a valid name"),
        ('cluster = "a"', 'cluster = "CA"', "cluster", "'ca' is reserved"),
        ('nats_url = "nats://127.0.0.1:4251"\n', "", "nats_url", "missing (required)"),
        ("nats://127.0.0.1:4251", "http://x:1", "nats_url", "expected nats://host:port"),
        ("nats://127.0.0.1:4251", "nats://a:1, 127.0.0.1", "nats_url", "'127.0.0.1'"),
        ("nats://127.0.0.1:4251", " , ", "nats_url", "names no server"),
        ('data_dir = "state"\n', "", "data_dir", "missing (required)"),
        ('data_dir = "state"', "data_dir = []", "data_dir", "expected a string, got an array"),
        ("[listen]", "[listen]\nport_ = 1", "listen.port_", "unknown key"),
        ('host = "127.0.0.1"\n', "", "listen.host", "missing (required)"),
        ("port = 7451\n", "", "listen.port", "missing (required)"),
        ("port = 7451", "port = 65536", "listen.port", "must be 0..65535, got 65536"),
        ("port = 7451", "port = -1", "listen.port", "must be 0..65535"),
        ("port = 7451", 'port = "7451"', "listen.port", "expected an integer"),
        ("port = 7451", "port = true", "listen.port", "expected an integer, got bool True"),
        ("port = 7451", "port = 7451.0", "listen.port", "expected an integer"),
        ('ca = "ca.pem"\n', "", "tls.ca", "missing (required)"),
        ('cert = "a.pem"', "cert = 3", "tls.cert", "expected a string"),
        ('key = "a.key"', 'key = "a.key"\npassword = "x"', "tls.password", "unknown key"),
    ],
)
def test_field_errors(tmp_path: Path, old: str, new: str, field: str, reason: str) -> None:
    error = error_of(tmp_path, replace(MINIMAL, old, new))
    assert error.field == field
    assert reason in error.reason
    assert f": {field}: " in str(error)


@pytest.mark.parametrize(
    ("top", "field", "reason"),
    [
        ("partitions = 0", "partitions", "must be 1..256, got 0"),
        ("partitions = 257", "partitions", "must be 1..256"),
        ("apply_streams = 1", "apply_streams", "expected true or false, got int 1"),
        ("status_interval_s = 0", "status_interval_s", "positive number of seconds"),
        ("status_interval_s = -1.5", "status_interval_s", "positive number of seconds"),
        ("status_interval_s = nan", "status_interval_s", "positive number of seconds"),
        ("status_interval_s = inf", "status_interval_s", "positive number of seconds"),
        ('status_interval_s = "1s"', "status_interval_s", "expected a number of seconds"),
        ('streams = "AQE_TESTS"', "streams", "expected an array of stream names"),
        ("streams = []", "streams", "names no stream"),
        ('streams = ["AQE_NOPE"]', "streams[0]", "unknown stream 'AQE_NOPE'"),
        ('streams = ["AQE_TESTS", 3]', "streams[1]", "expected a stream name, got int 3"),
        ('streams = ["AQE_TESTS", "AQE_TESTS"]', "streams[1]", "'AQE_TESTS' is listed twice"),
        ("colour = 1", "colour", "unknown key"),
        ("partition = 4", "partition", "did you mean 'partitions'?"),
        ("link = 3", "link", "expected a table"),
        ("peers = 3", "peers", "expected an array of tables"),
        ('peers = ["b"]', "peers", "expected an array of tables"),
    ],
)
def test_top_level_errors(tmp_path: Path, top: str, field: str, reason: str) -> None:
    # Top-level keys must come before the first table header.
    error = error_of(tmp_path, top + "\n" + MINIMAL)
    assert error.field == field
    assert reason in error.reason


def test_unknown_stream_lists_the_known_ones(tmp_path: Path) -> None:
    error = error_of(tmp_path, 'streams = ["AQE_NOPE"]\n' + MINIMAL)
    for spec in load_stream_specs():
        assert spec.name in error.reason


def test_stream_without_atomic_publish_is_refused(tmp_path: Path) -> None:
    specs = [StreamSpec(name="X", subjects=("x.>",), allow_atomic=False)]
    path = write(tmp_path, 'streams = ["X"]\n' + MINIMAL)
    with pytest.raises(BridgeConfigError, match=r"streams\[0\]: .*atomic publish"):
        load_config(path, specs=specs)


def peers(*blocks: str) -> str:
    return MINIMAL + "".join(f"[[peers]]\n{block}\n" for block in blocks)


@pytest.mark.parametrize(
    ("blocks", "field", "reason"),
    [
        (['address = "h:1"'], "peers[0].name", "missing (required)"),
        (['name = "b"'], "peers[0].address", "missing (required)"),
        (['name = "a"\naddress = "h:1"'], "peers[0].name", "'a' is this cluster's own name"),
        (['name = "b!"\naddress = "h:1"'], "peers[0].name", "not a valid name"),
        (
            [
                'name = "b"\naddress = "h:1"',
                'name = "c"\naddress = "h:2"',
                'name = "b"\naddress = "h:3"',
            ],
            "peers[2].name",
            "peer 'b' is already peers[0]",
        ),
        (
            ['name = "b"\naddress = "h:1"', 'name = "c"\naddress = "127.0.0.1"'],
            "peers[1].address",
            "expected host:port, got '127.0.0.1'",
        ),
        (['name = "b"\naddress = ":7452"'], "peers[0].address", "expected host:port"),
        (['name = "b"\naddress = "h:"'], "peers[0].address", "expected host:port"),
        (['name = "b"\naddress = "h:x1"'], "peers[0].address", "expected host:port"),
        (['name = "b"\naddress = "::1:7452"'], "peers[0].address", "expected host:port"),
        (['name = "b"\naddress = "h:0"'], "peers[0].address", "port must be 1..65535, got 0"),
        (['name = "b"\naddress = "h:70000"'], "peers[0].address", "port must be 1..65535"),
        (['name = "b"\naddress = 7452'], "peers[0].address", "expected a string"),
        (['name = "b"\naddress = "h:1"\nserver_name = ""'], "peers[0].server_name", "empty"),
        (
            ['name = "b"\naddress = "h:1"\ntrusted_relay = "yes"'],
            "peers[0].trusted_relay",
            "expected true or false",
        ),
        (
            ['name = "b"\naddress = "h:1"\nadress = "h:2"'],
            "peers[0].adress",
            "did you mean 'address'?",
        ),
    ],
)
def test_peer_errors(tmp_path: Path, blocks: list[str], field: str, reason: str) -> None:
    error = error_of(tmp_path, peers(*blocks))
    assert error.field == field
    assert reason in error.reason


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("max_in_flight = 0", "link.max_in_flight", "must be >= 1, got 0"),
        ("max_batch = 1000", "link.max_batch", "must be 1..999, got 1000"),
        ("keepalive_s = 0", "link.keepalive_s", "positive number of seconds"),
        ("keepalive_s = 40", "link.keepalive_s", "must be shorter than idle_timeout_s (30.0)"),
        ("reconnect_min_s = 3", "link.reconnect_max_s", "at least reconnect_min_s (3.0)"),
        ('relay = "yes"', "link.relay", "expected true or false"),
        ("keepalive = 2", "link.keepalive", "did you mean 'keepalive_s'?"),
        ("status_interval_s = 0.5", "link.status_interval_s", "unknown key"),
    ],
)
def test_link_errors(tmp_path: Path, line: str, field: str, reason: str) -> None:
    error = error_of(tmp_path, MINIMAL + f"[link]\n{line}\n")
    assert error.field == field
    assert reason in error.reason


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(BridgeConfigError, match=r"nope\.toml: no such file"):
        load_config(path)


def test_unreadable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"cluster = '\xff'\n")
    with pytest.raises(BridgeConfigError, match=r"bad.toml: cannot read"):
        load_config(path)


def test_not_toml(tmp_path: Path) -> None:
    error = error_of(tmp_path, "cluster = \n")
    assert error.field == ""
    assert "not valid TOML" in error.reason


def test_check_files_names_the_missing_one(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(path)
    with pytest.raises(BridgeConfigError, match=r"a.toml: tls.ca: no such file: .*ca.pem"):
        config.check_files()
    for name in ("ca.pem", "a.pem"):
        (path.parent / name).write_text("x")
    with pytest.raises(BridgeConfigError, match=r"tls.key: no such file"):
        config.check_files()
    (path.parent / "a.key").write_text("x")
    config.check_files()


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_ops_mesh_configs_load(name: str) -> None:
    config = load_config(OPS / f"{name}.toml")
    assert isinstance(config, BridgeConfig)
    assert config.cluster == name
    assert {p.name for p in config.peers} == {"a", "b", "c"} - {name}
    assert config.streams == DEFAULT_STREAMS
    assert config.tls.ca == OPS / "certs" / "ca.pem"


def test_ops_mesh_ports_are_consistent() -> None:
    configs = {n: load_config(OPS / f"{n}.toml") for n in "abc"}
    for config in configs.values():
        for peer in config.peers:
            assert peer.port == configs[peer.name].listen.port
    assert len({c.listen.port for c in configs.values()}) == 3
    assert len({c.nats_url for c in configs.values()}) == 3
    assert len({c.data_dir for c in configs.values()}) == 3
