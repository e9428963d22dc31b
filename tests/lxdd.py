"""A real LXD daemon for tests, recordings and benchmarks: its own LXD_DIR in a temporary folder,
a dir storage pool, no network bridge (each instance gets a point-to-point veth NIC instead), the
HTTPS API on a loopback address, a tiny image built here from busybox-static, and a client
certificate made here. `LxdDaemon()` starts one; `stop()` tears it down (instances, daemon,
leftover processes, mounts, folder), every step with a deadline.

Needs the `lxd` and `busybox-static` Debian packages (.ci/run installs them) and root.
Things LXD 5.0.2 does that this module works around, each checked against the real daemon:
- `lxd init --auto` wants a free subnet for its bridge: a preseed without networks is used;
- `"start": true` on POST /1.0/instances is ignored: `launch` starts in a second request;
- the graceful stop sends SIGPWR to the instance's init: ours exits on it (and on SIGTERM).
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

LXD = shutil.which("lxd")
BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).is_file()), None)
READY = 30          # seconds for the daemon to answer after it was started
API_TIMEOUT = 60    # seconds for one API exchange on the unix socket
SHUTDOWN = 30       # seconds for `lxd shutdown` (it stops the instances first)
IMAGE = "busybox"   # alias of the image every test instance is made from

# The image's init: the NIC gets an address derived from its MAC (10.99.0.<last byte % 250 + 2>),
# so a test can predict what LXD reports in state.network; it exits on SIGPWR (LXD's graceful
# stop) and SIGTERM, and reaps nothing else (nothing else runs).
INIT = """#!/bin/sh
trap 'exit 0' PWR TERM
ip link set lo up
if [ -e /sys/class/net/eth0/address ]; then
  mac=$(cat /sys/class/net/eth0/address)
  ip link set eth0 up
  ip addr add 10.99.0.$((0x${mac##*:} % 250 + 2))/24 dev eth0
fi
while :; do sleep 1 & wait $!; done
"""
APPLETS = ("sh", "sleep", "ip", "cat", "ls", "ps", "mount", "hostname", "poweroff", "halt")


def available() -> str | None:
    """Why LXD cannot run here, or None when it can."""
    if LXD is None:
        return "lxd is not installed (apt-get install lxd busybox-static)"
    if BUSYBOX is None:
        return "busybox-static is not installed (apt-get install busybox-static)"
    if os.geteuid() != 0:
        return "the LXD daemon needs root"
    return None


def ip_of(mac: str) -> str:
    """The address the image's init gives a NIC with this MAC."""
    return f"10.99.0.{int(mac.split(':')[-1], 16) % 250 + 2}"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LxdError(Exception):
    """LXD refused a request, or an operation failed: `.text` is LXD's own error text."""

    def __init__(self, text: str, code: int = 0) -> None:
        super().__init__(text)
        self.text, self.code = text, code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("lxd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def busybox_image() -> bytes:
    """A unified LXD image tarball (metadata.yaml + rootfs/) of busybox-static and our init."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        def add(name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = int(time.time()), mode
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        meta = (f"architecture: {os.uname().machine}\ncreation_date: {int(time.time())}\n"
                "properties:\n  description: busybox (cpfmap tests)\n  os: busybox\n  release: static\n")
        add("metadata.yaml", meta.encode(), 0o644)
        for d in ("rootfs", "rootfs/bin", "rootfs/sbin", "rootfs/etc", "rootfs/proc", "rootfs/sys",
                  "rootfs/dev", "rootfs/tmp", "rootfs/run", "rootfs/root"):
            add(d)
        add("rootfs/bin/busybox", Path(BUSYBOX).read_bytes())
        for applet in APPLETS:
            add(f"rootfs/bin/{applet}", link="busybox")
        add("rootfs/sbin/init", INIT.encode())
        add("rootfs/etc/hostname", b"busybox\n", 0o644)
    return out.getvalue()


def client_certificate(directory: Path, name: str = "ras") -> tuple[Path, Path]:
    """A self-signed client certificate and its key (PEM files), as `lxc remote add` makes."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA384()))
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


def der_base64(pem_file: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


class LxdDaemon:
    """One LXD daemon for one test session. The HTTPS API listens on 127.0.0.1 (the address LXD
    puts in its own server certificate, so `ca_file` = server.crt verifies as for a real user)
    on a free port; `trusted` is a client certificate in the trust store, `untrusted` one that
    is not (for the token and trust-password flows)."""

    def __init__(self, host: str = "127.0.0.1", trust: bool = True) -> None:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        started = time.monotonic()
        # Short path: the unix socket's path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="cpfmap-lxd-", dir="/tmp"))
        self.dir.chmod(0o711)
        self.socket = str(self.dir / "unix.socket")
        self.host, self.port = host, free_port(host)
        self.env = {**os.environ, "LXD_DIR": str(self.dir)}
        self.log = self.dir / "lxd.log"
        self.proc: subprocess.Popen | None = None
        try:
            self.proc = subprocess.Popen([LXD, "--logfile", str(self.log)], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
            self._lxd("waitready", f"--timeout={READY}", timeout=READY + 5)
            self._lxd("init", "--preseed", input=json.dumps(self.preseed()), timeout=API_TIMEOUT)
            self.server_cert = self.dir / "server.crt"
            self.fingerprint = self._import_image()
            self.clients = self.dir / "clients"
            self.clients.mkdir()
            self.trusted = client_certificate(self.clients, "ras")
            self.untrusted = client_certificate(self.clients, "newcomer")
            if trust:
                self.trust(self.trusted[0], "ras")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    # -- setup --------------------------------------------------------------------------------
    def preseed(self) -> dict:
        return {
            "config": {"core.https_address": f"{self.host}:{self.port}"},
            "storage_pools": [{"name": "default", "driver": "dir"}],
            "profiles": [{"name": "default", "devices": {
                "root": {"type": "disk", "path": "/", "pool": "default"},
                # no bridge: a veth pair per instance, its host end left unconfigured
                "eth0": {"type": "nic", "nictype": "p2p", "name": "eth0"}}}],
        }

    def _lxd(self, *args: str, input: str | None = None, timeout: float) -> str:
        proc = subprocess.run([LXD, *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"lxd {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                               f"log: {self._log_tail()}")
        return proc.stdout

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _import_image(self) -> str:
        reply = self.api("POST", "/1.0/images", body=busybox_image(),
                         headers={"Content-Type": "application/octet-stream"})
        fingerprint = self.wait(reply)["metadata"]["metadata"]["fingerprint"]
        self.api("POST", "/1.0/images/aliases", {"name": IMAGE, "target": fingerprint})
        return fingerprint

    def trust(self, cert: Path, name: str) -> None:
        """Add a client certificate to the trust store (what `lxc config trust add FILE` does)."""
        self.api("POST", "/1.0/certificates", {"type": "client", "name": name, "certificate": der_base64(cert)})

    def token(self, name: str) -> str:
        """A one-time trust token for a new client, built as `lxc config trust add --name NAME`
        prints it (shared/api/certificate.go CertificateAddToken: base64 of its JSON)."""
        reply = self.api("POST", "/1.0/certificates", {"type": "client", "name": name, "token": True})
        meta = reply["metadata"]["metadata"]
        token = {"client_name": name, "fingerprint": meta["fingerprint"], "addresses": meta["addresses"],
                 "secret": meta["secret"]}
        return base64.b64encode(json.dumps(token).encode()).decode()

    def settings(self, **extra: str) -> dict:
        """RAS settings for the lxd pack, trusted client certificate and verified TLS."""
        out = {"host": self.host, "port": str(self.port), "client_cert": str(self.trusted[0]),
               "client_key": str(self.trusted[1]), "ca_file": str(self.server_cert), "verify_tls": "true"}
        out.update(extra)
        return out

    # -- the API on the unix socket -------------------------------------------------------------
    def api(self, method: str, path: str, json_body=None, body: bytes | None = None,
            headers: dict | None = None, timeout: float = API_TIMEOUT) -> dict:
        """One request; LXD's error reply (or an HTTP error) raises LxdError with LXD's text."""
        conn = _UnixConnection(self.socket, timeout)
        try:
            data = json.dumps(json_body).encode() if json_body is not None else body
            conn.request(method, path, body=data, headers=headers or {})
            response = conn.getresponse()
            reply = json.loads(response.read() or b"{}")
        finally:
            conn.close()
        if reply.get("type") == "error" or response.status >= 400:
            raise LxdError(reply.get("error") or response.reason, reply.get("error_code") or response.status)
        return reply

    def wait(self, reply: dict, timeout: float = API_TIMEOUT) -> dict:
        """Wait for the operation an async reply started; its failure raises LxdError (its err)."""
        if reply.get("type") != "async":
            return reply
        op = self.api("GET", f"{reply['operation']}/wait?timeout={int(timeout)}", timeout=timeout + 5)
        meta = op["metadata"]
        if meta["status"] != "Success":
            raise LxdError(meta.get("err") or meta["status"])
        return op

    def create(self, name: str, start: bool = False, config: dict | None = None,
               kind: str = "container") -> dict:
        """An instance from the busybox image; started in a second request when asked (LXD 5.0.2
        ignores `"start": true` on create)."""
        self.wait(self.api("POST", "/1.0/instances", {
            "name": name, "type": kind, "source": {"type": "image", "alias": IMAGE},
            "profiles": ["default"], "config": config or {}}))
        if start:
            self.state(name, "start")
        return self.instance(name)

    def state(self, name: str, action: str, **extra) -> None:
        self.wait(self.api("PUT", f"/1.0/instances/{name}/state", {"action": action, **extra}))

    def instance(self, name: str) -> dict:
        return self.api("GET", f"/1.0/instances/{name}?recursion=1")["metadata"]

    def status(self, name: str) -> str:
        return self.api("GET", f"/1.0/instances/{name}/state")["metadata"]["status"]

    def remove(self, name: str, project: str = "default") -> None:
        """Delete an instance whatever its state (force stop first)."""
        query = f"?project={project}"
        try:
            if self.api("GET", f"/1.0/instances/{name}/state{query}")["metadata"]["status"] != "Stopped":
                self.wait(self.api("PUT", f"/1.0/instances/{name}/state{query}", {"action": "stop", "force": True}))
            self.wait(self.api("DELETE", f"/1.0/instances/{name}{query}"))
        except LxdError as exc:
            if exc.code != 404:
                raise

    def names(self) -> list[str]:
        return [p.rsplit("/", 1)[-1] for p in self.api("GET", "/1.0/instances")["metadata"]]

    # -- teardown -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop instances and daemon (lxd shutdown), then kill what is left of ours (by pid),
        unmount what it left mounted, and remove the folder. Each step has a deadline."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                subprocess.run([LXD, "shutdown", f"--timeout={SHUTDOWN}"], env=self.env, capture_output=True,
                               timeout=SHUTDOWN + 10)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._kill_leftovers()
        self._unmount()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Processes whose command line names our LXD_DIR (`[lxc monitor] <dir>/containers c1`)."""
        marker = str(self.dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _unmount(self) -> None:
        prefix = str(self.dir) + "/"
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
