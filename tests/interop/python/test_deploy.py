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


def render(path, kubectl=KUBECTL):
    """`kubectl kustomize path`, as a list of objects."""
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"{kubectl} kustomize {path}: {out.stderr}"
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


def comparable(objects):
    """The objects in one order, binary data decoded (kustomize versions
    wrap base64 differently)."""
    out = []
    for obj in objects:
        if "binaryData" in obj:
            obj = dict(obj, binaryData={k: base64.b64decode(v) for k, v in obj["binaryData"].items()})
        out.append(obj)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


@pytest.mark.parametrize(
    "path", [K8S, DEPLOY / "overlays" / "tls", DEPLOY / "overlays" / "prometheus-operator"]
)
def test_an_old_kustomize_renders_the_same(path):
    """kubectl 1.20's built-in kustomize (KUBECTL_OLD; scripts/test.sh
    unpacks Debian's kubernetes-client) renders the base and the overlays
    exactly as the kubectl on the PATH does."""
    old = os.environ.get("KUBECTL_OLD")
    assert old, "KUBECTL_OLD names kubectl 1.20 (scripts/test.sh sets it)"
    version = subprocess.run([old, "version", "--client"], capture_output=True, text=True).stdout
    assert 'GitVersion:"v1.20.' in version, version
    assert comparable(render(path, old)) == comparable(render(path))


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

    # The image the base names is this version's.
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.split()[-1]
    assert c["image"] == f"errmap:{version}", "deploy/k8s/kustomization.yaml's images: newTag"

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


class Pod:
    """The Deployment of `objects` run on this host as the kubelet would
    run its container: the image's ENTRYPOINT (the Deployment sets no
    `command`) with the Deployment's `args`, each volume laid out as the
    kubelet lays out a ConfigMap or Secret volume (`..data`) at a folder of
    its own, and 0.0.0.0:PORT moved to 127.0.0.1 and a free port."""

    def __init__(self, objects, volumes):
        self.c = container(objects)
        self.pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="errmap-pod-"))
        assert "command" not in self.c
        assert entrypoint() == ["/usr/local/bin/errmap"]
        args = list(self.c["args"])
        self.volumes = {}
        for name, files in volumes.items():
            mount = one_mount(self.c, name)
            self.volumes[name] = ConfigMapVolume(self.work / name, files)
            args = [a.replace(mount["mountPath"], str(self.volumes[name].root)) for a in args]
        self.ports = {}
        for i, a in enumerate(args):
            if a.startswith("0.0.0.0:"):
                port = int(a.split(":")[1])
                self.ports[port] = free_port()
                args[i] = f"127.0.0.1:{self.ports[port]}"
        assert set(self.ports) == {p["containerPort"] for p in self.c["ports"]}
        self.proc = subprocess.Popen(
            [BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.logs = []
        threading.Thread(target=lambda: self.logs.extend(self.proc.stderr), daemon=True).start()

    def port(self, name):
        """The host port that stands for the container port `name`."""
        return self.ports[[p for p in self.c["ports"] if p["name"] == name][0]["containerPort"]]

    def probe(self, name):
        """The kubelet's gRPC probe `name`: a health Check with its service."""
        spec = self.c[name]["grpc"]
        return health(self.ports[spec["port"]], spec.get("service", ""))

    def started(self):
        startup = self.c["startupProbe"]
        return _wait_until(
            lambda: _quiet(lambda: self.probe("startupProbe"))
            == health_pb2.HealthCheckResponse.SERVING,
            startup["failureThreshold"] * startup["periodSeconds"],
        )

    def stop(self):
        """SIGTERM; the exit code, within terminationGracePeriodSeconds."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=self.pod["terminationGracePeriodSeconds"])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def test_the_deployment_runs_as_the_kubelet_runs_it():
    config_map = one(BASE, "ConfigMap")
    pod = Pod(
        BASE,
        {"catalogs": {k: base64.b64decode(v) for k, v in config_map["binaryData"].items()}},
    )
    c = pod.c
    try:
        assert pod.started(), "the startup probe never passed"
        assert pod.probe("livenessProbe") == health_pb2.HealthCheckResponse.SERVING
        assert pod.probe("readinessProbe") == health_pb2.HealthCheckResponse.SERVING
        admin = pod.port("admin")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as ready:
            assert ready.status == 200
        # The ConfigMap's catalog is served.
        grpc_port = pod.port("grpc")
        assert shop_code_named(grpc_port, 2) == "SHOP_ERROR_OUT_OF_STOCK"
        assert shop_code_named(grpc_port, 300) == grpc.StatusCode.NOT_FOUND

        # The ConfigMap changes: the kubelet swaps ..data; errmap reloads.
        updated = pod.work / "updated.binpb"
        _shop_set(updated, extra_code=300)
        pod.volumes["catalogs"].update({"shop.binpb": updated.read_bytes()})
        assert _wait_until(
            lambda: shop_code_named(grpc_port, 300) == "SHOP_ERROR_EXTRA_300", 10
        ), "the ConfigMap's update was not reloaded within 10 s"

        # SIGTERM, as the kubelet sends it: readiness turns NOT_SERVING at
        # once, while the process goes on for the drain delay.
        began = time.monotonic()
        pod.proc.send_signal(signal.SIGTERM)
        assert _wait_until(
            lambda: _quiet(lambda: pod.probe("readinessProbe"))
            == health_pb2.HealthCheckResponse.NOT_SERVING,
            2,
        ), "readiness did not turn NOT_SERVING"
        # New calls are still answered during the drain delay; the admin
        # port's /readyz says 503 too.
        assert shop_code_named(grpc_port, 2) == "SHOP_ERROR_OUT_OF_STOCK"
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5)
        assert not_ready.value.code == 503
        code = pod.proc.wait(timeout=pod.pod["terminationGracePeriodSeconds"])
        took = time.monotonic() - began
        assert code == 0, "".join(pod.logs[-20:])
        assert took < pod.pod["terminationGracePeriodSeconds"]
        # It waited the drain delay out before stopping.
        assert took >= seconds(arg(c["args"], "--drain-delay")) - 0.5
    finally:
        pod.close()


def openssl(*args, cwd):
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_the_tls_overlay_runs_with_its_secrets_and_probes_in_plaintext():
    """The TLS overlay, run with Secrets made here (openssl): a CA and a
    certificate for localhost, and an RS256 key set. The probes ask the
    plaintext health port; the gRPC port is TLS, and its lookup wants a
    token the key set verifies."""
    keys = pathlib.Path(tempfile.mkdtemp(prefix="errmap-secrets-"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/CN=errmap test CA", "-days", "1", cwd=keys)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=localhost", cwd=keys)
    (keys / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "san.ext", cwd=keys)
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "jwt.key",
            cwd=keys)
    modulus = openssl("rsa", "-in", "jwt.key", "-noout", "-modulus", cwd=keys).decode()
    n = bytes.fromhex(modulus.strip().split("=", 1)[1])
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                      "n": b64url(n), "e": "AQAB"}]}
    c = container(TLS)
    audience = arg(c["args"], "--auth-audience")
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
    claims = b64url(json.dumps({"aud": audience, "sub": "probe-test",
                                "exp": int(time.time()) + 600}).encode())
    (keys / "signing-input").write_text(f"{header}.{claims}")
    signature = openssl("dgst", "-sha256", "-sign", "jwt.key", "signing-input", cwd=keys)
    token = f"{header}.{claims}.{b64url(signature)}"

    config_map = one(TLS, "ConfigMap")
    pod = Pod(
        TLS,
        {
            "catalogs": {k: base64.b64decode(v) for k, v in config_map["binaryData"].items()},
            # A kubernetes.io/tls Secret's keys, and the key set's.
            "tls": {"tls.crt": (keys / "tls.crt").read_bytes(),
                    "tls.key": (keys / "tls.key").read_bytes()},
            "jwt": {"jwks.json": json.dumps(jwks).encode()},
        },
    )
    try:
        assert pod.started(), "".join(pod.logs[-20:])
        assert pod.probe("readinessProbe") == health_pb2.HealthCheckResponse.SERVING
        assert pod.probe("livenessProbe") == health_pb2.HealthCheckResponse.SERVING
        credentials = grpc.ssl_channel_credentials((keys / "ca.pem").read_bytes())
        target = f"127.0.0.1:{pod.port('grpc')}"
        options = (("grpc.ssl_target_name_override", "localhost"),)
        with grpc.secure_channel(target, credentials, options=options) as channel:
            stub = catalog_pb2_grpc.ErrorCatalogStub(channel)
            with pytest.raises(grpc.RpcError) as anonymous:
                stub.GetError(catalog_pb2.GetErrorRequest(code=21), timeout=5)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            hit = stub.GetError(
                catalog_pb2.GetErrorRequest(code=2, domain="shop.example.com"),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
            assert hit.error.name == "SHOP_ERROR_OUT_OF_STOCK"
        # The gRPC port speaks no plaintext.
        with grpc.insecure_channel(target) as plain:
            with pytest.raises(grpc.RpcError):
                catalog_pb2_grpc.ErrorCatalogStub(plain).GetError(
                    catalog_pb2.GetErrorRequest(code=21), timeout=5
                )
        assert pod.stop() == 0, "".join(pod.logs[-20:])
    finally:
        pod.close()
        shutil.rmtree(keys, ignore_errors=True)


def _quiet(call):
    """`call()`, or None when the connection fails (not listening yet, or
    gone)."""
    try:
        return call()
    except grpc.RpcError:
        return None
