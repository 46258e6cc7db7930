"""Typed settings: flags over FELIX_P4_<SECTION>_<KEY> over YAML over defaults, checked at load
with the key's dotted name and where the value came from."""

import pytest

from felix_p4.settings import ConfigError, Settings, host_port, load_settings


def test_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("p4runtime: {address: 'file:1', device_id: 5}\nports: {map: {cali-a: 3}}\n")
    env = {"FELIX_P4_P4RUNTIME_DEVICE_ID": "7", "FELIX_P4_PORTS_MODE": "static"}
    s = load_settings({"p4runtime": {"address": "flag:2"}}, env=env, path=str(path))
    assert s.p4runtime.address == "flag:2"
    assert s.p4runtime.device_id == 7
    assert s.ports.mode == "static"
    assert s.ports.map == {"cali-a": 3}
    assert s.p4runtime.election_id == 10


def test_defaults_need_no_file(tmp_path):
    assert load_settings(env={"FELIX_P4_CONFIG": str(tmp_path / "absent.yaml")}) == Settings()


def test_config_env_var_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("forwarding: {gateway_mac: '02:00:00:00:00:01'}\n")
    s = load_settings(env={"FELIX_P4_CONFIG": str(path)})
    assert s.forwarding.gateway_mac == "02:00:00:00:00:01"


def test_environment_values_are_parsed_by_type():
    env = {
        "FELIX_P4_P4RUNTIME_PLAINTEXT": "yes",
        "FELIX_P4_FELIX_COALESCE_MS": "2.5",
        "FELIX_P4_PORTS_MAP": "{cali-a: 1, cali-b: 2}",
        "FELIX_P4_SERVICES_FILES": "/a.yaml,/b.yaml",
    }
    s = load_settings(env=env, path=None)
    assert s.p4runtime.plaintext is True
    assert s.felix.coalesce_ms == 2.5
    assert s.ports.map == {"cali-a": 1, "cali-b": 2}
    assert s.services.files == ["/a.yaml", "/b.yaml"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FELIX_P4_P4RUNTIME_NOPE": "1"}, "FELIX_P4_P4RUNTIME_NOPE names no setting"),
        (
            {"FELIX_P4_P4RUNTIME_DEVICE_ID": "x"},
            "p4runtime.device_id (environment variable FELIX_P4_P4RUNTIME_DEVICE_ID)",
        ),
        (
            {"FELIX_P4_P4RUNTIME_PLAINTEXT": "maybe"},
            "p4runtime.plaintext (environment variable FELIX_P4_P4RUNTIME_PLAINTEXT)",
        ),
        ({"FELIX_P4_P4RUNTIME": "x"}, "names a section"),
    ],
)
def test_bad_environment_is_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env=env, path=None)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("p4runtime: {adress: x}\n", r"unknown setting p4runtime\.adress \(file "),
        ("p4runtime: {device_id: five}\n", r"p4runtime\.device_id \(file .*\): 'five' is not"),
        ("p4runtime: {batch_size: 0}\n", r"p4runtime\.batch_size \(file .*\): 0 must be positive"),
        ("ports: {mode: magic}\n", r"ports\.mode \(file .*\): 'magic' is not one of"),
        ("ports: {map: {cali-a: one}}\n", r"ports\.map \(file .*\): 'one' is not an integer"),
        ("services: {files: /x.yaml}\n", r"services\.files \(file .*\): '/x.yaml' is not a list"),
        ("forwarding: 3\n", r"setting forwarding \(file .*\) must be a mapping"),
        ("record: [a]\n", r"record \(file .*\): \['a'\] is not a string"),
    ],
)
def test_bad_file_values_are_named_with_the_file(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, path=str(path))


def test_bad_flag_is_named_as_a_flag():
    with pytest.raises(ConfigError, match=r"ports\.mode \(command line\)"):
        load_settings({"ports": {"mode": "nope"}}, env={}, path=None)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, path=str(tmp_path / "absent.yaml"))


def test_host_port_is_a_name_or_a_number():
    assert host_port(load_settings({"ports": {"host": "100"}}, env={}).ports) == 100
    assert host_port(load_settings(env={}).ports) == "host"
