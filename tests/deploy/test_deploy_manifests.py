"""Every kustomization under deploy/ renders with real kustomize, every Kubernetes object in it
validates offline against the API schemas, and every FelixConfiguration against facts from
Calico's CRDs; the pieces agree on the paths, labels and ports they share."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_artefacts import REPO, run_make

from felix_p4.settings import load_settings

DEPLOY = REPO / "deploy"
KUSTOMIZATIONS = sorted(
    str(path.parent.relative_to(DEPLOY)) for path in DEPLOY.rglob("kustomization.yaml")
)
FACTS = yaml.safe_load((Path(__file__).parent / "calico_felixconfiguration_facts.yaml").read_text())
# Calico's end-to-end runs float over the newest three Kubernetes minors; these bracket them.
KUBERNETES_VERSIONS = ["1.32", "1.35"]
INSTALL_OVERLAYS = {"manifest-install": "kube-system", "operator": "felix-p4"}
INSTALL_LABEL = ("felix-p4/enabled", "true")  # felix-p4's DaemonSet runs on these nodes
DATAPLANE_LABEL = ("felix-p4/dataplane", "p4")  # Felix uses felix-p4 on these nodes
SHIM_SOURCE = REPO / "packaging" / "felix-p4-shim.c"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@pytest.fixture(scope="module")
def kustomize() -> str:
    """build/tools/kustomize-<version>, from `make kustomize` (make pytest builds it first)."""
    if "KUSTOMIZE" in os.environ:
        return os.environ["KUSTOMIZE"]
    result = run_make("kustomize")
    assert result.returncode == 0, f"make kustomize failed:\n{result.stdout}{result.stderr}"
    version = re.search(r"^KUSTOMIZE_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert version is not None
    return str(REPO / "build" / "tools" / f"kustomize-{version.group(1)}")


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(kustomize: str, directory: str) -> list[dict[str, Any]]:
    if directory not in _rendered:
        result = subprocess.run(
            [kustomize, "build", str(DEPLOY / directory)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"kustomize build deploy/{directory}:\n{result.stderr}"
        _rendered[directory] = [o for o in yaml.safe_load_all(result.stdout) if o]
    return _rendered[directory]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [o for o in objects if o["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, got {len(matching)}"
    return matching[0]


def check_felix_configuration(resource: dict[str, Any]) -> None:
    """What Calico's API server (or CRD validation) would check of the fields we set."""
    name = resource["metadata"]["name"]
    assert resource["apiVersion"] in FACTS["api_versions"], resource["apiVersion"]
    assert resource["kind"] == FACTS["kind"]
    assert "namespace" not in resource["metadata"], "FelixConfiguration is cluster-scoped"
    assert DNS_SUBDOMAIN.fullmatch(name), f"{name} is not a valid resource name"
    spec = resource["spec"]
    python_types = {"boolean": bool, "string": str}
    for field, value in spec.items():
        assert field in FACTS["spec_fields"], f"{name}: Calico has no spec.{field}"
        schema = FACTS["spec_fields"][field]
        assert isinstance(value, python_types[schema["type"]]), f"{name}: spec.{field} type"
        assert len(str(value)) <= schema.get("maxLength", len(str(value)))
        assert value in schema.get("enum", [value]), f"{name}: spec.{field} = {value!r}"
    if "nodeSelector" in spec:
        forbidden = FACTS["node_selector_forbidden"]
        assert name not in forbidden["names"], f"{name}: nodeSelector not allowed here"
        assert not name.startswith(tuple(forbidden["name_prefixes"])), f"{name}: per-node"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_object_validates_offline(kustomize: str, directory: str, version: str) -> None:
    objects = render(kustomize, directory)
    assert objects, f"deploy/{directory} renders nothing"
    for resource in objects:
        if resource["kind"] == "FelixConfiguration":
            check_felix_configuration(resource)
        else:
            # strict: an unknown or misspelt field fails instead of being dropped by the server.
            kubernetes_validate.validate(resource, version, strict=True)


def test_the_layout_is_an_install_overlay_per_calico_install_and_the_felix_configurations() -> None:
    assert set(KUSTOMIZATIONS) == {
        "base",
        "manifest-install",
        "operator",
        "felix-config/by-label",
        "felix-config/per-node",
    }


@pytest.mark.parametrize(("overlay", "namespace"), INSTALL_OVERLAYS.items())
def test_install_overlays_keep_everything_in_one_namespace(
    kustomize: str, overlay: str, namespace: str
) -> None:
    objects = render(kustomize, overlay)
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for resource in objects:
        if resource["kind"] not in cluster_scoped:
            assert resource["metadata"]["namespace"] == namespace, resource["metadata"]["name"]
    binding = only(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "felix-p4", "namespace": namespace}
    ]
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    if overlay == "operator":
        # Host network and hostPath volumes are beyond Pod Security's baseline level.
        (created,) = namespaces
        assert created["metadata"]["name"] == namespace
        assert created["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    else:
        assert namespaces == [], "kube-system exists already"


def test_rbac_reads_services_and_endpointslices_and_nothing_else(kustomize: str) -> None:
    role = only(render(kustomize, "base"), "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "services", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
    }


def _shim_path(kustomize: str) -> PurePosixPath:
    paths = {
        o["spec"]["dataplaneDriver"]
        for d in ("felix-config/by-label", "felix-config/per-node")
        for o in render(kustomize, d)
    }
    assert len(paths) == 1, paths
    return PurePosixPath(paths.pop())


def test_felix_configurations_switch_only_p4_nodes_to_the_shim(kustomize: str) -> None:
    by_label = only(render(kustomize, "felix-config/by-label"), "FelixConfiguration")
    per_node = only(render(kustomize, "felix-config/per-node"), "FelixConfiguration")
    for resource in (by_label, per_node):
        assert resource["spec"]["useInternalDataplaneDriver"] is False
    label_chars = FACTS["selector_label_chars"]
    selector = re.fullmatch(rf"([{label_chars}]+) == '([^']*)'", by_label["spec"]["nodeSelector"])
    assert selector is not None, "a single equality Calico's selector parser accepts"
    assert selector.groups() == DATAPLANE_LABEL
    assert per_node["metadata"]["name"].startswith("node.")
    assert "nodeSelector" not in per_node["spec"]


def test_daemonset_installs_the_shim_and_serves_the_socket_where_felix_looks(
    kustomize: str,
) -> None:
    objects = render(kustomize, "manifest-install")
    pod = only(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["nodeSelector"][INSTALL_LABEL[0]] == INSTALL_LABEL[1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_dir = PurePosixPath(volumes["felix-plugins"]["hostPath"]["path"])
    shim = _shim_path(kustomize)
    assert shim.parent == host_dir, "Felix's dataplaneDriver must be in the shared host directory"
    # calico-node mounts the host's /var/lib/calico (calico.yaml and the operator alike).
    assert host_dir.is_relative_to("/var/lib/calico")

    (init,) = pod["initContainers"]
    mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["felix-plugins"]
    command = " ".join(init["command"])
    installed = f"{mount}/{shim.name}"
    assert re.search(rf"mv -f \S+ {re.escape(installed)}$", command), "rename into place"

    (driver,) = pod["containers"]
    socket = PurePosixPath(driver["args"][driver["args"].index("--felix-socket") + 1])
    mounts = {m["name"]: m["mountPath"] for m in driver["volumeMounts"]}
    assert PurePosixPath(mounts["felix-plugins"]) == host_dir == socket.parent
    default = re.search(r'#define DEFAULT_SOCKET "([^"]+)"', SHIM_SOURCE.read_text())
    assert default is not None and str(socket) == default.group(1), "the shim's default socket"


def test_settings_volume_holds_a_config_the_driver_accepts(kustomize: str, tmp_path: Path) -> None:
    objects = render(kustomize, "operator")
    pod = only(objects, "DaemonSet")["spec"]["template"]["spec"]
    (driver,) = pod["containers"]
    env = {e["name"]: e["value"] for e in driver["env"]}
    mounts = {m["name"]: m["mountPath"] for m in driver["volumeMounts"]}
    sources = {v["name"]: v for v in pod["volumes"]}["settings"]["projected"]["sources"]
    files: dict[str, str] = {}  # path in the container -> its content
    for source in sources:
        (kind,) = source
        referenced = next(
            o
            for o in objects
            if o["kind"] == {"configMap": "ConfigMap", "secret": "Secret"}[kind]
            and o["metadata"]["name"] == source[kind]["name"]
        )
        for item in source[kind]["items"]:
            assert item["key"] in referenced["data"]
            files[f"{mounts['settings']}/{item['path']}"] = referenced["data"][item["key"]]

    config_text = files[env["FELIX_P4_CONFIG"]]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_text)
    settings = load_settings(path=str(config_file), env={})
    for role in ("ca", "cert", "key"):
        assert getattr(settings.p4runtime.tls, role) in files, f"p4runtime.tls.{role}"

    _, _, port = settings.metrics.address.rpartition(":")
    ports = {p["name"]: p["containerPort"] for p in driver["ports"]}
    assert ports["metrics"] == int(port)
    # The kubelet probes the pod IP: on the host network that is the node's, not loopback.
    assert not settings.metrics.address.startswith("127.")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert driver[probe]["httpGet"] == {"path": path, "port": "metrics"}


def _measured_peak_rss_at_s() -> tuple[float, float]:
    """(snapshot, restarted driver) peak RSS at scale S in MiB, from bench/RESULTS.md's table."""
    row = next(
        line
        for line in (REPO / "bench" / "RESULTS.md").read_text().splitlines()
        if line.startswith("| driver peak RSS: null run / embedded run / restarted driver |")
    )
    at_s = row.split("|")[3]  # columns: name, small, S
    fresh, _, restarted = (float(v) for v in re.findall(r"\d+(?:\.\d+)?", at_s))
    return fresh, restarted


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_driver_memory_covers_the_peak_measured_at_scale_s(kustomize: str) -> None:
    (driver,) = only(render(kustomize, "manifest-install"), "DaemonSet")["spec"]["template"][
        "spec"
    ]["containers"]
    fresh, restarted = _measured_peak_rss_at_s()
    resources = driver["resources"]
    # A restarted driver decodes the device's read-back and peaks highest; the limit keeps
    # headroom above it so a restart at S is not OOM-killed.
    assert _mebibytes(resources["requests"]["memory"]) >= fresh
    assert _mebibytes(resources["limits"]["memory"]) >= 1.25 * restarted
