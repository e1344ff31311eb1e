"""deploy/Containerfile, built with Debian's buildah and run with podman.

`deploy/build-image.sh` stages the image's root (the binary, the libraries
`ldd` names, CA roots, /etc/passwd) and builds it FROM scratch into an OCI
archive. The test checks what went in (the binary runs, chrooted into that
root, as the image's user: no library beyond what it copies), loads the
archive into podman, and runs it as the Deployment runs it: a read-only
root, no capabilities, the image's numeric user.

On this machine podman runs with `--runtime runc --cgroup-manager cgroupfs`
(crun fails on the cgroup set-up) and with explicit `--ulimit`s: the
sandbox refuses podman's default rlimits (RLIMIT_NOFILE 1048576 and
RLIMIT_NPROC), `error setting rlimit type 7: operation not permitted`.
Storage is buildah's and podman's `vfs` driver, which needs no overlay
support from the kernel.
"""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from test_catalog_life import _wait_until
from test_deploy import free_port
from test_interop import BIN, ROOT, catalog_pb2, catalog_pb2_grpc

TAG = "localhost/errmap-test:ci"
PODMAN = ["podman", "--storage-driver", "vfs"]
RUN = [
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
]
CONTEXT = ROOT / "target" / "image-context"


def run(*command, timeout=300, env=None):
    out = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, env=env
    )
    assert out.returncode == 0, f"{' '.join(command)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_the_image_builds_holds_only_its_inputs_and_serves():
    work = pathlib.Path(tempfile.mkdtemp(prefix="errmap-image-"))
    archive = work / "errmap.oci.tar"
    env = dict(os.environ, STORAGE_DRIVER="vfs")
    built = run(
        str(ROOT / "deploy" / "build-image.sh"),
        "--binary",
        BIN,
        "--output",
        str(archive),
        "--tag",
        TAG,
        env=env,
    )
    assert f"==> {TAG}:" in built, built
    assert archive.stat().st_size > 0

    # What went in: the binary, exactly the libraries it links, CA roots and
    # the user. Nothing else.
    rootfs = CONTEXT / "rootfs"
    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file())
    libraries = sorted(
        line.split("=>")[-1].split("(")[0].strip().lstrip("/")
        for line in run("ldd", BIN).splitlines()
        if "/" in line
    )
    assert files == sorted(
        [
            "usr/local/bin/errmap",
            "etc/ssl/certs/ca-certificates.crt",
            "etc/passwd",
            "etc/group",
            *libraries,
        ]
    ), files
    assert "65532:65532" in (rootfs / "etc" / "passwd").read_text()
    # The binary runs in that root alone, as the image's user.
    version = run("chroot", "--userspec=65532:65532", str(rootfs), "/usr/local/bin/errmap", "--version")
    assert version.startswith("errmap "), version

    run(*PODMAN, "load", "-i", str(archive))
    container = None
    try:
        config = json.loads(run(*PODMAN, "image", "inspect", TAG))[0]["Config"]
        assert config["User"] == "65532:65532"
        assert config["Entrypoint"] == ["/usr/local/bin/errmap"]
        cmd = config["Cmd"]
        assert cmd[0] == "serve"
        assert cmd[cmd.index("--addr") + 1] == "0.0.0.0:50051"
        assert cmd[cmd.index("--admin-addr") + 1] == "0.0.0.0:9090"
        assert set(config["ExposedPorts"]) == {"50051/tcp", "9090/tcp"}

        # Run as the Deployment runs it; only the addresses are this test's.
        port, admin = free_port(), free_port()
        container = run(
            *PODMAN,
            "run",
            "-d",
            *RUN,
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            TAG,
            "serve",
            "--addr",
            f"127.0.0.1:{port}",
            "--admin-addr",
            f"127.0.0.1:{admin}",
            "--log-format",
            "json",
            timeout=120,
        ).strip()

        def serving():
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=2
                    )
                    return reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

        assert _wait_until(serving, 30), run(*PODMAN, "logs", container)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            hit = catalog_pb2_grpc.ErrorCatalogStub(channel).GetError(
                catalog_pb2.GetErrorRequest(code=21), timeout=5
            )
        assert hit.error.name == "AUTH_REQUIRED"
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as ready:
            assert ready.status == 200
        top = run(*PODMAN, "top", container, "user", "args")
        assert "errmap" in top.splitlines()[1], top
        # podman stop sends SIGTERM, as the kubelet does: exit 0.
        run(*PODMAN, "stop", "-t", "20", container, timeout=60)
        state = json.loads(run(*PODMAN, "inspect", container))[0]["State"]
        assert state["ExitCode"] == 0, run(*PODMAN, "logs", container)
        logs = subprocess.run(
            [*PODMAN, "logs", container], capture_output=True, text=True, timeout=30
        )
        lines = [l for l in (logs.stdout + logs.stderr).splitlines() if l.startswith("{")]
        assert any(json.loads(l)["fields"]["message"] == "stopped" for l in lines), lines
    finally:
        if container:
            subprocess.run([*PODMAN, "rm", "-f", container], capture_output=True, timeout=60)
        subprocess.run([*PODMAN, "rmi", "-f", TAG], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
