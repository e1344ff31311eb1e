"""deploy/: the Kubernetes manifests, rendered, validated and run.

- `kubectl kustomize` (Debian's kubernetes-client, KUBECTL) renders the
  base and its overlays;
- `kubernetes-validate` checks them in strict mode against the schemas of
  Kubernetes 1.30 and 1.37 (the ServiceMonitor of the prometheus-operator
  overlay has no bundled schema: it is checked by hand);
- the Deployment's container runs on this host as the kubelet would run it:
  the image's ENTRYPOINT (deploy/Containerfile) with the Deployment's args,
  the ConfigMap laid out as a ConfigMap volume is (files linked through a
  `..data` symlink that an update swaps), and the probes asked exactly as a
  kubelet asks them: a gRPC health Check with the probe's service name.
  Only the listen addresses change: 0.0.0.0:PORT becomes 127.0.0.1 and a
  free port, and each probe asks the port that stands for its own.
"""

import base64
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from test_catalog_life import _shop_set, _wait_until
from test_interop import BIN, ROOT, catalog_pb2, catalog_pb2_grpc

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
VERSIONS = ("1.30.0", "1.37.0")


def render(path):
    """`kubectl kustomize path`, as a list of objects."""
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"kubectl kustomize {path}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(objects):
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    return spec["containers"][0]


def arg(args, flag):
    """The value that follows `flag` in `args`."""
    assert flag in args, f"{flag} not in {args}"
    return args[args.index(flag) + 1]


def seconds(duration):
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, duration
    n, unit = int(match[1]), match[2]
    return {"ms": n / 1000, "s": n, "m": 60 * n}[unit]


BASE = render(K8S)
TLS = render(DEPLOY / "overlays" / "tls")
OPERATOR = render(DEPLOY / "overlays" / "prometheus-operator")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name,objects", [("base", BASE), ("tls", TLS), ("operator", OPERATOR)])
def test_every_object_is_valid_in_strict_mode(version, name, objects):
    checked = 0
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            # No bundled schema: the prometheus-operator's own CRD.
            assert name == "operator" and obj["kind"] == "ServiceMonitor"
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} {obj['kind']}/{obj['metadata']['name']} on {version}: {e}")
        checked += 1
    assert checked >= 6, f"{name}: {checked} objects checked"


def test_the_base_is_what_a_platform_team_accepts():
    kinds = sorted(o["kind"] for o in BASE)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
        ]
    )
    for obj in BASE:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "errmap", obj["kind"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "errmap", obj["kind"]

    deployment = one(BASE, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
        "kubernetes.io/hostname"
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] != 0
    c = container(BASE)
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]
    # The image's user, numeric, is the one the pod asks for.
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in containerfile
    # A drain finishes before SIGKILL.
    stop = seconds(arg(c["args"], "--drain-delay")) + seconds(arg(c["args"], "--grace-period"))
    assert pod["terminationGracePeriodSeconds"] > stop
    # Native gRPC probes on the serving port.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == ports["grpc"], probe
    assert c["readinessProbe"]["grpc"]["service"] == "errmap.v1.ErrorCatalog"
    # The catalogs: a whole-directory mount (a subPath never updates).
    mount = one_mount(c, "catalogs")
    assert "subPath" not in mount
    assert arg(c["args"], "--catalog").startswith(mount["mountPath"] + "/")

    service = one(BASE, "Service")
    grpc_port = [p for p in service["spec"]["ports"] if p["name"] == "grpc"][0]
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
    assert any(p["port"] == ports["admin"] for p in service["spec"]["ports"])

    pdb = one(BASE, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    hpa = one(BASE, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["admin"])

    monitor = one(OPERATOR, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "admin"
    assert monitor["metadata"]["namespace"] == "errmap"


def one_mount(c, volume):
    mounts = [m for m in c["volumeMounts"] if m["name"] == volume]
    assert len(mounts) == 1, f"{volume}: {mounts}"
    return mounts[0]


def test_the_tls_overlay_probes_a_plaintext_health_port():
    c = container(TLS)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert f"0.0.0.0:{ports['health']}" == arg(c["args"], "--health-addr")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == ports["health"], probe
    assert c["readinessProbe"]["grpc"]["service"] == "errmap.v1.ErrorCatalog"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert arg(c["args"], "--tls-cert").startswith(mounts["tls"] + "/")
    assert arg(c["args"], "--auth-jwks-file").startswith(mounts["jwt"] + "/")
    # Everything else of the base stays.
    assert arg(c["args"], "--catalog") == arg(container(BASE)["args"], "--catalog")


def test_the_configmaps_catalog_is_the_shop_example_compiled():
    """deploy/k8s/catalogs/shop.binpb is examples/shop's catalog, compiled
    with grpcio-tools (`--include_imports`). UPDATE_GOLDEN=1 rewrites it."""
    committed = K8S / "catalogs" / "shop.binpb"
    fresh = pathlib.Path(tempfile.mkdtemp(prefix="errmap-deploy-")) / "shop.binpb"
    _shop_set(fresh)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.copy(fresh, committed)
    assert committed.read_bytes() == fresh.read_bytes(), (
        "deploy/k8s/catalogs/shop.binpb is stale: UPDATE_GOLDEN=1 rewrites it"
    )
    config_map = one(BASE, "ConfigMap")
    assert base64.b64decode(config_map["binaryData"]["shop.binpb"]) == committed.read_bytes()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConfigMapVolume:
    """A folder laid out as the kubelet lays out a ConfigMap volume: each
    key a symlink into `..data`, itself a symlink to a timestamped folder;
    an update writes a new folder and swaps `..data` by rename."""

    def __init__(self, root, files):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True)
        self.version = 0
        self.update(files)
        for name in files:
            (self.root / name).symlink_to(pathlib.Path("..data") / name)

    def update(self, files):
        self.version += 1
        folder = self.root / f"..2026_12_07_00_00_0{self.version}.{os.getpid()}"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        os.replace(tmp, self.root / "..data")


def entrypoint():
    """The image's ENTRYPOINT, in its JSON form."""
    for line in (DEPLOY / "Containerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return json.loads(line[len("ENTRYPOINT ") :])
    pytest.fail("no ENTRYPOINT in deploy/Containerfile")


def health(port, service, timeout=5):
    """A gRPC health Check, as the kubelet asks it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def shop_code_named(port, code):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = catalog_pb2_grpc.ErrorCatalogStub(channel)
        try:
            return stub.GetError(
                catalog_pb2.GetErrorRequest(code=code, domain="shop.example.com"), timeout=5
            ).error.name
        except grpc.RpcError as e:
            return e.code()


def test_the_deployment_runs_as_the_kubelet_runs_it():
    c = container(BASE)
    pod = one(BASE, "Deployment")["spec"]["template"]["spec"]
    config_map = one(BASE, "ConfigMap")
    work = pathlib.Path(tempfile.mkdtemp(prefix="errmap-pod-"))
    # The ConfigMap's volume, where the Deployment mounts it.
    mount = one_mount(c, "catalogs")
    volume = ConfigMapVolume(
        work / "catalogs",
        {k: base64.b64decode(v) for k, v in config_map["binaryData"].items()},
    )
    # `command` is unset: the image's ENTRYPOINT, with `args` for its CMD.
    assert "command" not in c
    command = entrypoint()
    assert command == ["/usr/local/bin/errmap"]
    args = [a.replace(mount["mountPath"], str(volume.root)) for a in c["args"]]
    ports = {}
    for i, a in enumerate(args):
        if a.startswith("0.0.0.0:"):
            ports[int(a.split(":")[1])] = free_port()
            args[i] = f"127.0.0.1:{ports[int(a.split(':')[1])]}"
    assert set(ports) == {p["containerPort"] for p in c["ports"]}
    proc = subprocess.Popen(
        [BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    logs = []
    threading.Thread(target=lambda: logs.extend(proc.stderr), daemon=True).start()
    try:
        # The kubelet's startup, liveness and readiness probes.
        def probe(name):
            spec = c[name]["grpc"]
            return health(ports[spec["port"]], spec.get("service", ""))

        assert _wait_until(
            lambda: _quiet(lambda: probe("startupProbe")) == health_pb2.HealthCheckResponse.SERVING,
            c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"],
        ), "the startup probe never passed"
        assert probe("livenessProbe") == health_pb2.HealthCheckResponse.SERVING
        assert probe("readinessProbe") == health_pb2.HealthCheckResponse.SERVING
        admin = ports[[p for p in c["ports"] if p["name"] == "admin"][0]["containerPort"]]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as ready:
            assert ready.status == 200
        # The ConfigMap's catalog is served.
        grpc_port = ports[c["readinessProbe"]["grpc"]["port"]]
        assert shop_code_named(grpc_port, 2) == "SHOP_ERROR_OUT_OF_STOCK"
        assert shop_code_named(grpc_port, 300) == grpc.StatusCode.NOT_FOUND

        # The ConfigMap changes: the kubelet swaps ..data; errmap reloads.
        updated = work / "updated.binpb"
        _shop_set(updated, extra_code=300)
        volume.update({"shop.binpb": updated.read_bytes()})
        assert _wait_until(
            lambda: shop_code_named(grpc_port, 300) == "SHOP_ERROR_EXTRA_300", 10
        ), "the ConfigMap's update was not reloaded within 10 s"

        # SIGTERM, as the kubelet sends it: readiness turns NOT_SERVING at
        # once, while the process goes on for the drain delay.
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert _wait_until(
            lambda: _quiet(lambda: probe("readinessProbe"))
            == health_pb2.HealthCheckResponse.NOT_SERVING,
            2,
        ), "readiness did not turn NOT_SERVING"
        # New calls are still answered during the drain delay; the admin
        # port's /readyz says 503 too.
        assert shop_code_named(grpc_port, 2) == "SHOP_ERROR_OUT_OF_STOCK"
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5)
        assert not_ready.value.code == 503
        code = proc.wait(timeout=pod["terminationGracePeriodSeconds"])
        took = time.monotonic() - began
        assert code == 0, "".join(logs[-20:])
        assert took < pod["terminationGracePeriodSeconds"]
        # It waited the drain delay out before stopping.
        assert took >= seconds(arg(c["args"], "--drain-delay")) - 0.5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _quiet(call):
    """`call()`, or None when the connection fails (not listening yet, or
    gone)."""
    try:
        return call()
    except grpc.RpcError:
        return None
