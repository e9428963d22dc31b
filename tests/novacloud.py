"""A real OpenStack Nova on a loopback address, for tests, recordings and benchmarks.

Nova ships its functional-test scaffolding in its wheel: the real API (v2.1), conductor,
scheduler and compute services with Nova's fake virt driver (nova.virt.fake), sqlite
databases, fake oslo.messaging, Placement in process (openstack-placement) and in-process
Glance and Neutron fakes. `Cloud` subclasses Nova's own `_IntegratedTestBase`, runs its setUp
outside a test runner, and serves over real HTTP (cheroot) on 127.0.x.y, beside thin facades
for what the fixtures do not serve over HTTP:

    /identity/v3   Keystone v3: password and application-credential tokens, service catalog
    /compute/v2.1  Nova's own WSGI app, behind a token check that plays keystonemiddleware
    /image/v2      Glance v2 images, read and deleted from the Glance fixture's store
    /_harness      test controls: token lifetime, revoking every token, slow power-offs

Nova's fixtures take over the process (config, logging, stdout, monkeypatches), so the cloud
runs in a child process: `ServedNova` starts `python tests/novacloud.py HOST`, reads one JSON line
with its URL, and ends it by closing its stdin.
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

PROJECT_ID = "6f70656e737461636b20342065766572"   # nova.tests.fixtures.nova.PROJECT_ID
PROJECT = "demo"
DOMAIN = "Default"
PROJECTS = {PROJECT: PROJECT_ID, "other": "0a1b2c3d4e5f40718293a4b5c6d7e8f9"}
USERS = {  # name -> (password, roles, project); Nova's stubbed context treats user id "admin" as admin
    "ras": ("ras-secret-pw", ["reader", "member"], PROJECT),
    "admin": ("admin-secret-pw", ["reader", "member", "admin"], PROJECT),
    "other": ("other-secret-pw", ["reader", "member"], "other"),
}
APP_CREDENTIAL = {"id": "9e4c1a0b7d2f4c55a1b2c3d4e5f60718", "name": "ras-connector",
                  "secret": "ac-secret-3f1e9d", "user": "ras"}
REGION = "RegionOne"
IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"   # the Glance fixture's image1
NETWORK_ID = "3cb9bc59-5699-4588-a4b1-b87f96708bc6"  # the Neutron fixture's network_1 ("private")
MICROVERSION = "2.96"
_hosts = itertools.count(31)


def next_host() -> str:
    n = next(_hosts)
    return f"127.0.{n // 250}.{n % 250 + 2}"


# ====================================================================== parent side

class ServedNova:
    """The cloud in a child process; `stop()` when done."""

    def __init__(self, host: str | None = None, startup_timeout: float = 120) -> None:
        self.host = host or next_host()
        env = dict(os.environ, OS_NOVA_DISABLE_EVENTLET_PATCHING="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, __file__, self.host], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        ready = _read_line(self.proc, startup_timeout)
        self.url = ready["url"]
        self.tokens: dict[str, str] = {}

    def settings(self, auth: str = "password", **extra: str) -> dict:
        out = {"auth_url": f"{self.url}/identity/v3", "project_name": PROJECT, "region": REGION}
        if auth == "password":
            out.update(username="ras", password=USERS["ras"][0])
        else:
            out.update(application_credential_id=APP_CREDENTIAL["id"],
                       application_credential_secret=APP_CREDENTIAL["secret"])
        out.update(extra)
        return out

    def token(self, user: str = "admin") -> str:
        if user not in self.tokens:
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": DOMAIN}, "password": USERS[user][0]}}},
                "scope": {"project": {"name": USERS[user][2], "domain": {"name": DOMAIN}}}}}
            reply = requests.post(f"{self.url}/identity/v3/auth/tokens", json=body, timeout=30)
            reply.raise_for_status()
            self.tokens[user] = reply.headers["X-Subject-Token"]
        return self.tokens[user]

    def nova(self, method: str, path: str, body: dict | None = None, user: str = "admin",
             accept: tuple = (200, 201, 202, 204)) -> dict:
        """Nova's API as an operator would call it (admin by default)."""
        headers = {"X-Auth-Token": self.token(user), "OpenStack-API-Version": f"compute {MICROVERSION}"}
        reply = requests.request(method, f"{self.url}/compute/v2.1{path}", json=body, headers=headers, timeout=60)
        if reply.status_code not in accept:
            raise AssertionError(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:300]}")
        return reply.json() if reply.content else {}

    def control(self, **body) -> None:
        requests.post(f"{self.url}/_harness/tokens", json=body, timeout=10).raise_for_status()
        if body.get("revoke"):
            self.tokens.clear()

    def boot(self, name: str, flavor: str = "1", wait: str | None = "ACTIVE", user: str = "ras", **extra) -> str:
        server = {"name": name, "imageRef": IMAGE_ID, "flavorRef": flavor,
                  "networks": [{"uuid": NETWORK_ID}], **extra}
        sid = self.nova("POST", "/servers", {"server": server}, user=user)["server"]["id"]
        if wait:
            self.wait(sid, wait)
        return sid

    def action(self, sid: str, body: dict, wait: str | None = None, user: str = "admin") -> None:
        self.nova("POST", f"/servers/{sid}/action", body, user=user)
        if wait:
            self.wait(sid, wait)

    def server(self, sid: str) -> dict:
        return self.nova("GET", f"/servers/{sid}")["server"]

    def wait(self, sid: str, status: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            server = self.server(sid)
            if server["status"] == status and server.get("OS-EXT-STS:task_state") is None:
                return server
            if server["status"] == "ERROR" and status != "ERROR" or time.monotonic() > deadline:
                raise AssertionError(f"server {sid} is {server['status']}/{server.get('OS-EXT-STS:task_state')}, "
                                     f"not {status}: {server.get('fault')}")
            time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _read_line(proc: subprocess.Popen, timeout: float) -> dict:
    box: list = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box or not box[0]:
        proc.kill()
        raise RuntimeError(f"the Nova harness did not start within {timeout}s (exit code {proc.poll()})")
    return json.loads(box[0])


# ====================================================================== child side

class ReaderPreferringLock:
    """Replaces CellDatabases' writer-preferring lock: a reader already inside (possibly nested)
    must never wait for a queued writer, or ten parallel boots plus a listing deadlock against
    the fixtures' DatabaseWriteLock."""

    def __init__(self, timeout: float = 120) -> None:
        self._cond = threading.Condition()
        self._readers: collections.Counter = collections.Counter()
        self._writer: int | None = None
        self._depth = 0
        self._timeout = timeout

    def _wait(self, ready) -> None:
        if not self._cond.wait_for(ready, self._timeout):
            raise RuntimeError("cell database lock not granted in time")

    @contextlib.contextmanager
    def read_lock(self):
        me = threading.get_ident()
        with self._cond:
            self._wait(lambda: self._writer in (None, me))
            self._readers[me] += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers[me] -= 1
                if not self._readers[me]:
                    del self._readers[me]
                self._cond.notify_all()

    @contextlib.contextmanager
    def write_lock(self):
        me = threading.get_ident()
        with self._cond:
            self._wait(lambda: self._writer in (None, me) and not set(self._readers) - {me})
            self._writer, self._depth = me, self._depth + 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                self._cond.notify_all()


def _json(start_response, status: str, body, headers=()) -> list:
    data = json.dumps(body).encode() if body is not None else b""
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers])
    return [data]


def _body(environ) -> dict:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        return json.loads(environ["wsgi.input"].read(size) or b"{}") if size <= 1 << 20 else {}
    except ValueError:
        return {}


def _unauthorized(start_response) -> list:
    return _json(start_response, "401 Unauthorized", {"error": {
        "code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}},
        [("WWW-Authenticate", "Keystone uri='/identity/v3'")])


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Keystone:
    """Keystone v3 tokens and catalog, as far as a client of Nova and Glance sees them."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.tokens: dict[str, dict] = {}
        self.lifetime = 3600.0
        self.lock = threading.Lock()

    def catalog(self) -> list:
        def service(kind: str, name: str, path: str) -> dict:
            endpoints = [{"id": uuid.uuid5(uuid.NAMESPACE_URL, f"{name}-{i}").hex, "interface": i, "region": r,
                          "region_id": r, "url": f"{self.base_url}{path if r == REGION else '/elsewhere' + path}"}
                         for r in (REGION, "RegionTwo") for i in ("public", "internal")]
            return {"type": kind, "name": name, "id": uuid.uuid5(uuid.NAMESPACE_URL, name).hex, "endpoints": endpoints}
        return [service("identity", "keystone", "/identity"), service("compute", "nova", "/compute/v2.1"),
                service("image", "glance", "/image")]

    def __call__(self, environ, start_response, path: str) -> list:
        method = environ["REQUEST_METHOD"]
        if path in ("", "/") and method == "GET":
            return _json(start_response, "200 OK", {"version": {"id": "v3.14", "status": "stable"}})
        if path != "/auth/tokens":
            return _json(start_response, "404 Not Found", {"error": {"code": 404, "message": "not found"}})
        if method == "DELETE":
            with self.lock:
                gone = self.tokens.pop(environ.get("HTTP_X_SUBJECT_TOKEN", ""), None)
            return _json(start_response, "204 No Content" if gone else "404 Not Found", None)
        if method != "POST":
            return _json(start_response, "405 Method Not Allowed", None)
        user = self._authenticate(_body(environ).get("auth") or {})
        if user is None:
            return _unauthorized(start_response)
        token, record = self._issue(user)
        return _json(start_response, "201 Created", {"token": record["body"]}, [("X-Subject-Token", token)])

    def _authenticate(self, auth: dict) -> str | None:
        identity = auth.get("identity") or {}
        methods = identity.get("methods") or []
        if "password" in methods:
            user = ((identity.get("password") or {}).get("user")) or {}
            name = user.get("name")
            ok = name in USERS and USERS[name][0] == user.get("password")
            project = ((auth.get("scope") or {}).get("project")) or {}
            wanted = USERS[name][2] if ok else None
            return name if ok and project.get("name", project.get("id")) in (wanted, PROJECTS[wanted]) else None
        if "application_credential" in methods:
            cred = identity.get("application_credential") or {}
            ok = cred.get("secret") == APP_CREDENTIAL["secret"] and (
                cred.get("id") == APP_CREDENTIAL["id"] or cred.get("name") == APP_CREDENTIAL["name"])
            return APP_CREDENTIAL["user"] if ok and "scope" not in auth else None
        return None

    def _issue(self, user: str) -> tuple[str, dict]:
        now = datetime.datetime.now(datetime.timezone.utc)
        roles, project = USERS[user][1], USERS[user][2]
        body = {"methods": ["password"], "issued_at": _iso(now),
                "expires_at": _iso(now + datetime.timedelta(seconds=self.lifetime)),
                "user": {"id": user, "name": user, "domain": {"id": "default", "name": DOMAIN}},
                "project": {"id": PROJECTS[project], "name": project, "domain": {"id": "default", "name": DOMAIN}},
                "roles": [{"id": r, "name": r} for r in roles], "catalog": self.catalog()}
        token = "gAAAA" + uuid.uuid4().hex
        record = {"user": user, "roles": roles, "project": PROJECTS[project], "expires": time.monotonic() + self.lifetime, "body": body}
        with self.lock:
            self.tokens[token] = record
        return token, record

    def validate(self, environ) -> dict | None:
        with self.lock:
            record = self.tokens.get(environ.get("HTTP_X_AUTH_TOKEN", ""))
        return record if record and record["expires"] > time.monotonic() else None


class Glance:
    """Glance v2 images over the Glance fixture's store."""

    def __init__(self, fixture, base_url: str) -> None:
        self.fixture = fixture
        self.base_url = base_url

    def __call__(self, environ, start_response, path: str, who: dict) -> list:
        method = environ["REQUEST_METHOD"]
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["v2", "images"] or len(parts) > 3:
            return _json(start_response, "404 Not Found", {"message": "not found"})
        if len(parts) == 2 and method == "GET":
            return self._list(environ, start_response)
        image = self.fixture.images.get(parts[2]) if len(parts) == 3 else None
        if image is None:
            return _json(start_response, "404 Not Found", {"message": f"No image found with ID {parts[-1]}"})
        if method == "GET":
            return _json(start_response, "200 OK", self.v2(image))
        if method == "DELETE":
            owner = (image.get("properties") or {}).get("owner")
            if owner not in (None, who["project"]) and "admin" not in who["roles"]:
                return _json(start_response, "403 Forbidden", {"message": "You are not permitted to delete this image."})
            self.fixture.delete(None, image["id"])
            return _json(start_response, "204 No Content", None)
        return _json(start_response, "405 Method Not Allowed", None)

    def _list(self, environ, start_response) -> list:
        from urllib.parse import parse_qsl
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        limit = min(int(query.pop("limit", 25)), 1000)
        marker = query.pop("marker", None)
        query.pop("sort", None)
        images = sorted((self.v2(i) for i in list(self.fixture.images.values())), key=lambda i: i["id"])
        images = [i for i in images if all(str(i.get(k)) == v for k, v in query.items())]
        if marker:
            images = [i for i in images if i["id"] > marker]
        page = images[:limit]
        body = {"images": page, "first": "/v2/images", "schema": "/v2/schemas/images"}
        if len(images) > limit:
            body["next"] = f"/v2/images?limit={limit}&marker={page[-1]['id']}"
        return _json(start_response, "200 OK", body)

    def v2(self, image: dict) -> dict:
        props = dict(image.get("properties") or {})
        owner = props.pop("owner", None)
        out = {k: v for k, v in props.items() if isinstance(v, (str, int, float, bool)) or v is None}
        stamp = lambda v: _iso(v) if isinstance(v, datetime.datetime) else v  # noqa: E731
        out.update(id=image["id"], name=image.get("name"), status=image.get("status", "active"),
                   visibility="public" if image.get("is_public", owner is None) else "private", owner=owner,
                   container_format=image.get("container_format"), disk_format=image.get("disk_format"),
                   size=image.get("size"), min_disk=image.get("min_disk", 0), min_ram=image.get("min_ram", 0),
                   created_at=stamp(image.get("created_at")), updated_at=stamp(image.get("updated_at")),
                   tags=[], self=f"/v2/images/{image['id']}", file=f"/v2/images/{image['id']}/file",
                   schema="/v2/schemas/image")
        return out


class Front:
    """The one WSGI app on the loopback port: dispatch by first path segment, check tokens."""

    def __init__(self, keystone: Keystone, nova_app, glance: Glance) -> None:
        self.keystone, self.nova_app, self.glance = keystone, nova_app, glance

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        head, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        if head == "identity":
            return self.keystone(environ, start_response, rest[3:] if rest.startswith("/v3") else "-")
        if head == "_harness":
            return self._harness(environ, start_response)
        if head not in ("compute", "image"):
            return _json(start_response, "404 Not Found", {"message": "not found"})
        for key in [k for k in environ if k.startswith(("HTTP_X_AUTH_USER", "HTTP_X_AUTH_PROJECT", "HTTP_X_ROLES"))]:
            del environ[key]   # never trust identity headers from the client
        who = self.keystone.validate(environ)
        if who is None:
            return _unauthorized(start_response)
        if head == "image":
            return self.glance(environ, start_response, rest, who)
        environ.update(SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + "/compute", PATH_INFO=rest,
                       HTTP_X_AUTH_USER=who["user"], HTTP_X_AUTH_PROJECT_ID=who["project"],
                       HTTP_X_ROLES=",".join(who["roles"]))
        return self.nova_app(environ, start_response)

    def _harness(self, environ, start_response) -> list:
        body = _body(environ)
        with self.keystone.lock:
            if body.get("revoke"):
                self.keystone.tokens.clear()
            if "lifetime" in body:
                self.keystone.lifetime = float(body["lifetime"])
        if "power_off_seconds" in body:   # keeps a server in task_state powering-off that long
            SLOW["power_off"] = min(float(body["power_off_seconds"]), 30.0)
        return _json(start_response, "200 OK", {})


SLOW = {"power_off": 0.0}


def _patch_fixtures() -> None:
    """What running Nova's test scaffolding as a long-lived server needs."""
    from nova.tests import fixtures as nova_fixtures
    from nova.virt import fake

    power_off = fake.FakeDriver.power_off

    def slow_power_off(self, *args, **kwargs):
        time.sleep(SLOW["power_off"])
        return power_off(self, *args, **kwargs)
    fake.FakeDriver.power_off = slow_power_off

    original_init = nova_fixtures.CellDatabases.__init__

    def cell_databases_init(self):
        original_init(self)
        self._cell_lock = ReaderPreferringLock()
    nova_fixtures.CellDatabases.__init__ = cell_databases_init

    class UniqueNeutron(nova_fixtures.NeutronFixture):
        """Every port its own fixed IP and a stable MAC (the fixture reuses one IP)."""
        counter = itertools.count(10)

        def create_port(self, body=None):
            port = super().create_port(body)["port"]
            n = next(self.counter)
            port["mac_address"] = f"fa:16:3e:00:{n // 256:02x}:{n % 256:02x}"
            port["fixed_ips"] = [dict(port["fixed_ips"][0], ip_address=f"192.168.{1 + n // 250}.{n % 250 + 2}")]
            self._ports[port["id"]] = port
            return {"port": dict(port)}
    nova_fixtures.NeutronFixture = UniqueNeutron
    # Room for many small guests and one that fills the host (see ras.huge below).
    small = fake.SmallFakeDriver   # the fixtures' driver: 2 vCPUs, 8 GiB
    small.vcpus, small.memory_mb, small.local_gb = 64, 65536, 2000


def _serve(host: str) -> None:
    import sysconfig

    from cheroot import wsgi as cheroot_wsgi
    from nova.tests.functional import integrated_helpers

    class Cloud(integrated_helpers._IntegratedTestBase):
        CAST_AS_CALL = False   # the API answers 202 at once; work goes on in the services' threads

        def runTest(self):  # noqa: N802 (unittest needs one test method)
            pass

        def _setup_services(self):
            # Nova's wheel installs it under the prefix it was installed in: a virtualenv made
            # with --system-site-packages has its own prefix, so look in the base one too
            found = [os.path.join(root, "etc/nova/api-paste.ini") for root in
                     (sysconfig.get_path("data"), sys.base_prefix, sys.prefix)]
            self.flags(api_paste_config=next((f for f in found if os.path.isfile(f)), found[0]), group="wsgi")
            for name in ("instances", "cores", "ram"):
                self.flags(**{name: -1}, group="quota")
            super()._setup_services()

    out = os.fdopen(os.dup(1), "w")   # Nova's fixtures capture sys.stdout
    _patch_fixtures()
    cloud = Cloud()
    cloud.setUp()
    # Nova's WarningsFixture makes SQLAlchemy 2.1's deprecations errors, which strand a guest
    # half-way (e.g. in `scheduling` when setting it to ERROR): a server only warns.
    import warnings

    from sqlalchemy import exc as sqla_exc
    warnings.filterwarnings("ignore", category=sqla_exc.SADeprecationWarning)
    if os.environ.get("NOVA_HARNESS_LOG"):   # Nova's fixtures keep their logs in memory
        import logging
        handler = logging.FileHandler(os.environ["NOVA_HARNESS_LOG"])
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
    server = cheroot_wsgi.Server((host, 0), lambda e, s: front(e, s), numthreads=16, request_queue_size=64)
    server.prepare()
    url = f"http://{host}:{server.bind_addr[1]}"
    keystone = Keystone(url)
    front = Front(keystone, cloud.api_fixture.app(), Glance(cloud.glance, url))
    cloud.admin_api.microversion = MICROVERSION
    cloud.admin_api.post_flavor({"flavor": {"name": "ras.huge", "id": "ras.huge", "ram": 40000, "vcpus": 2,
                                            "disk": 10}})
    threading.Thread(target=server.serve, daemon=True).start()
    out.write(json.dumps({"url": url}) + "\n")
    out.flush()
    sys.__stdin__.read()   # until the parent closes our stdin (or dies)
    os._exit(0)


if __name__ == "__main__":
    os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    _serve(sys.argv[1])
