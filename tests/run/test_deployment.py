"""A real deployment on loopback: flower-superlink (no --simulation) and two
flower-supernode processes over TLS with SuperNode authentication, then ``flwr run``.

Certificates and node keys are generated for the test. Every process is started in its
own session and stopped by its process group id; nothing is left running.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flowerbed.tools.superlink import free_port

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NUM_NODES = 2


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowerbed test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (write(folder / "ca.crt", ca.public_bytes(pem)),
            write(folder / "server.pem", cert.public_bytes(pem)),
            write(folder / "server.key", key.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption())))


def make_node_keys(folder: Path, i: int) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format (what SuperNode authentication reads)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = write(folder / f"node{i}", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    public = write(folder / f"node{i}.pub", key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


class Processes:
    """Processes started in their own sessions, stopped by process group id."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, env=self.env, cwd=APP, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:  # children of the group (SuperExec, app processes) that outlived it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def alive(pgid: int) -> bool:
        """Whether a live (not zombie) process of group ``pgid`` remains."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False


def flwr(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args], env=env, cwd=APP, text=True,
                          capture_output=True, timeout=timeout, check=False)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_deployment_over_tls_with_node_auth(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, server_cert, server_key = make_tls(certs)
    port = free_port()
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{ca}"\n')
    env = {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = Processes(env, tmp_path)
    out = tmp_path / "outputs"
    try:
        procs.start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca),
            "--ssl-certfile", str(server_cert), "--ssl-keyfile", str(server_key),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(port),
            "--database", str(tmp_path / "state.db")])
        tls = ssl.create_default_context(cafile=str(ca))

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=1,
                                            context=tls) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(healthy, 60, "the SuperLink")
        for i in range(NUM_NODES):
            private, public = make_node_keys(certs, i)
            reg = flwr(env, "supernode", "register", str(public))
            assert reg.returncode == 0, reg.stdout + reg.stderr
            procs.start(f"supernode{i}", [
                str(BIN / "flower-supernode"), "--root-certificates", str(ca),
                "--superlink", f"127.0.0.1:{port}",
                "--auth-supernode-private-key", str(private),
                "--node-config", f"partition-id={i} num-partitions={NUM_NODES}",
                "--port", str(free_port())])
        # an unregistered node must be refused: it never shows up online
        stranger, _ = make_node_keys(certs, 99)
        intruder = procs.start("intruder", [
            str(BIN / "flower-supernode"), "--root-certificates", str(ca),
            "--superlink", f"127.0.0.1:{port}", "--auth-supernode-private-key", str(stranger),
            "--max-retries", "2", "--port", str(free_port())])

        def online() -> int:
            res = flwr(env, "supernode", "ls", "--format", "json")
            try:
                nodes = json.loads(res.stdout)["nodes"]
            except (ValueError, KeyError):
                return -1
            return sum(str(n.get("status", "")).startswith("online") for n in nodes)

        wait_until(lambda: online() == NUM_NODES, 90, f"{NUM_NODES} SuperNodes online")
        run = flwr(env, "run", str(APP), "--stream",
                   "--run-config", f'output-dir="{out}" run-name="deployed" engine="flower" '
                   "num-clients=4 num-server-rounds=1 fraction-train=1.0 local-epochs=1 "
                   "wandb=false progress=false failure-rate=0.2 checkpoint-every=1",
                   timeout=400)
        assert "Successfully started run" in run.stdout + run.stderr, run.stdout + run.stderr
        run_id = next(int(w) for line in (run.stdout + run.stderr).splitlines()
                      if "Successfully started run" in line for w in line.split()
                      if w.isdigit())

        def status() -> dict:
            res = flwr(env, "ls", "--run-id", str(run_id), "--format", "json")
            return json.loads(res.stdout)["runs"][0]

        wait_until(lambda: status()["status"].startswith("finished"), 120, "the run's end")
        assert status()["status"] == "finished:completed", status()
        assert online() == NUM_NODES  # the unregistered node never joined
        assert intruder.pid in [p.pid for p in procs.procs]
    finally:
        procs.stop_all()
    assert all(p.poll() is not None for p in procs.procs)
    wait_until(lambda: not any(procs.alive(p.pid) for p in procs.procs), 20,
               "every process group to end")
    run_dir = out / "deployed"
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1]
    for r in records[1:]:  # all 4 clients sampled; each answered or failed
        assert r["participants"] + r["failures"] == 4 * r["attempts"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 1
    assert summary["totals"]["failed"] == sum(r["failed"] for r in records)
    assert summary["final"]["test_accuracy"] > records[0]["test_accuracy"]
    assert (run_dir / "checkpoint.npz").exists()
