"""Settings precedence: flags over FELIX_P4_<SECTION>_<KEY> over YAML over defaults."""

import pytest

from felix_p4.config import ConfigError, load_settings


def test_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("p4runtime: {address: 'file:1', device_id: 5}\nports: {map: {cali-a: 3}}\n")
    env = {"FELIX_P4_P4RUNTIME_DEVICE_ID": "7", "FELIX_P4_PORTS_MODE": "static"}
    s = load_settings({"p4runtime": {"address": "flag:2"}}, env=env, path=str(path))
    assert s["p4runtime"]["address"] == "flag:2"
    assert s["p4runtime"]["device_id"] == 7
    assert s["ports"]["mode"] == "static"
    assert s["ports"]["map"] == {"cali-a": 3}
    assert s["p4runtime"]["election_id"] == 10


def test_config_env_var_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("forwarding: {gateway_mac: '02:00:00:00:00:01'}\n")
    s = load_settings(env={"FELIX_P4_CONFIG": str(path)})
    assert s["forwarding"]["gateway_mac"] == "02:00:00:00:00:01"


@pytest.mark.parametrize(
    "env",
    [{"FELIX_P4_P4RUNTIME_NOPE": "1"}, {"FELIX_P4_P4RUNTIME_DEVICE_ID": "x"}],
)
def test_bad_settings_are_named(env):
    with pytest.raises(ConfigError, match="FELIX_P4_P4RUNTIME"):
        load_settings(env=env, path=None)


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("p4runtime: {adress: x}\n")
    with pytest.raises(ConfigError, match=r"p4runtime\.adress"):
        load_settings(env={}, path=str(path))
