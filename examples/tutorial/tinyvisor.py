#!/usr/bin/env python3
"""tinyvisor: a small, runnable REST hypervisor for the cpfmap tutorial (standard library only).

    python examples/tutorial/tinyvisor.py [--host 127.0.0.1] [--port 8780]

Its API is deliberately unlike Proxmox VE's:
- POST /api/v1/login {"user", "password"} -> {"token", "expires_in"}; then `Authorization: Bearer`
- GET  /api/v1/machines?offset=&limit= -> {"items": [{"id", "name"}], "total"} (pages of at most 50)
- GET  /api/v1/machines/{id} -> {"id", "name", "power", "template", "nics": [{"mac"}]}
  power is a number: 0 off, 1 on, 2 suspended, 3 starting, 4 stopping
- GET  /api/v1/machines/{id}/addresses -> [{"ip", "mac"}], or 409 when the guest has no agent
- POST /api/v1/machines/{id}/power {"state": on|off|reset|reboot|suspend} -> 204
- long work answers 202 with `Location: /api/v1/operations/{op}`; GET that until "done" or "error":
  POST .../template {"template": bool}, POST .../clone {"name", "snapshot", "linked"},
  DELETE /api/v1/machines/{id}, POST/DELETE .../snapshots[/{name}], POST .../snapshots/{name}/revert
- errors: {"error": {"message": "..."}} with a 4xx status
It listens on loopback only. Everything lives in memory.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER, PASSWORD = "admin", "tiny-secret"
OFF, ON, SUSPENDED, STARTING, STOPPING = 0, 1, 2, 3, 4


class Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class World:
    """The hypervisor's state; every method runs under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}
        self.ops: dict[str, dict] = {}
        self.ids = itertools.count(200)
        self.machines: dict[int, dict] = {}
        for n, (name, power, agent) in enumerate([("web-01", ON, True), ("web-02", OFF, False),
                                                  ("gold-image", OFF, True), ("db-01", ON, False)], 101):
            self.add(n, name, power, agent)

    def add(self, vid: int, name: str, power: int = OFF, agent: bool = True) -> dict:
        machine = {"id": vid, "name": name, "power": power, "template": False, "agent": agent,
                   "nics": [{"mac": f"52-54-00-00-{vid // 256:02X}-{vid % 256:02X}"}], "snapshots": [],
                   "base": None}
        self.machines[vid] = machine
        return machine

    def machine(self, vid: str) -> dict:
        try:
            return self.machines[int(vid)]
        except (KeyError, ValueError):
            raise Problem(404, f"machine {vid} does not exist") from None

    def view(self, m: dict) -> dict:
        # Transitions show once, then settle: a client polling sees starting -> on.
        shown = {k: m[k] for k in ("id", "name", "power", "template", "nics")}
        if m["power"] == STARTING:
            m["power"] = ON
        elif m["power"] == STOPPING:
            m["power"] = OFF
        return shown

    def operation(self, work) -> str:
        op = secrets.token_hex(4)
        self.ops[op] = {"id": op, "status": "queued", "work": work, "polls": 0}
        return op

    def poll(self, op: str) -> dict:
        entry = self.ops.get(op)
        if entry is None:
            raise Problem(404, f"operation {op} does not exist")
        entry["polls"] += 1
        if entry["status"] in ("queued", "working") and entry["polls"] >= 2:
            try:
                entry["work"]()
                entry["status"] = "done"
            except Problem as exc:
                entry.update(status="error", error=exc.message)
        elif entry["status"] == "queued":
            entry["status"] = "working"
        return {k: v for k, v in entry.items() if k in ("id", "status", "error")}


def route(world: World, method: str, path: str, query: dict, body: dict) -> tuple[int, object, dict]:
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")][2:]  # after api/v1
    if parts == ["machines"] and method == "GET":
        offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 20)), 50)
        items = [{"id": m["id"], "name": m["name"]} for m in sorted(world.machines.values(), key=lambda m: m["id"])]
        return 200, {"items": items[offset:offset + limit], "total": len(items)}, {}
    if parts[:1] == ["operations"] and len(parts) == 2:
        return 200, world.poll(parts[1]), {}
    if parts[:1] == ["whoami"]:
        return 200, {"user": USER}, {}
    if parts[:1] == ["logout"]:
        return 204, None, {}
    if parts[:1] != ["machines"] or len(parts) < 2:
        raise Problem(404, f"no such endpoint {method} {path}")
    m = world.machine(parts[1])
    return machine_route(world, m, method, parts[2:], body)


def machine_route(world: World, m: dict, method: str, rest: list, body: dict) -> tuple[int, object, dict]:
    if not rest and method == "GET":
        return 200, world.view(m), {}
    if not rest and method == "DELETE":
        return accepted(world, lambda: world.machines.pop(m["id"], None))
    if rest == ["addresses"]:
        if m["power"] != ON or not m["agent"]:
            raise Problem(409, "no agent in guest")
        return 200, [{"ip": f"192.0.2.{m['id'] % 250}", "mac": m["nics"][0]["mac"]},
                     {"ip": "127.0.0.1", "mac": "00-00-00-00-00-00"}], {}
    if rest == ["power"] and method == "POST":
        power(m, str(body.get("state")))
        return 204, None, {}
    if rest == ["template"] and method == "POST":
        return accepted(world, lambda: make_template(m, bool(body.get("template"))))
    if rest == ["clone"] and method == "POST":
        return clone(world, m, body)
    if rest[:1] == ["snapshots"]:
        return snapshots(world, m, method, rest[1:], body)
    raise Problem(404, "no such endpoint")


def power(m: dict, state: str) -> None:
    if m["template"] and state in ("on", "reset", "reboot", "suspend"):
        raise Problem(409, "machine is a template")
    if state == "on":
        m["power"] = ON if m["power"] in (ON, SUSPENDED) else STARTING
    elif state == "off":
        m["power"] = OFF if m["power"] == OFF else STOPPING
    elif state in ("reset", "reboot"):
        if m["power"] != ON:
            raise Problem(409, "machine is not running")
        m["power"] = STARTING
    elif state == "suspend":
        if m["power"] != ON:
            raise Problem(409, "machine is not running")
        m["power"] = SUSPENDED
    else:
        raise Problem(400, f"unknown power state {state!r}")


def make_template(m: dict, template: bool) -> None:
    if template and m["power"] != OFF:
        raise Problem(409, "machine must be off to become a template")
    m["template"] = template


def clone(world: World, m: dict, body: dict) -> tuple[int, object, dict]:
    name, snapshot, linked = str(body.get("name") or ""), body.get("snapshot"), bool(body.get("linked"))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}", name):
        raise Problem(400, f"invalid machine name {name!r}")
    if snapshot and snapshot not in m["snapshots"]:
        raise Problem(409, f"snapshot {snapshot!r} does not exist")
    if linked and not snapshot:
        raise Problem(409, "a linked clone needs a snapshot")
    new = world.add(next(world.ids), name, OFF, m["agent"])
    new["base"] = f"{m['id']}@{snapshot}" if linked else None

    def work():
        if m["id"] not in world.machines:
            world.machines.pop(new["id"], None)
            raise Problem(409, "source machine vanished")
    status, _, headers = accepted(world, work)
    return status, {"vm_id": new["id"]}, headers


def snapshots(world: World, m: dict, method: str, rest: list, body: dict) -> tuple[int, object, dict]:
    if not rest and method == "GET":
        return 200, {"snapshots": [{"name": s} for s in m["snapshots"]]}, {}
    if not rest and method == "POST":
        name = str(body.get("name") or "")
        if not name or name in m["snapshots"]:
            raise Problem(409, f"snapshot {name!r} already exists" if name else "snapshot name missing")
        return accepted(world, lambda: m["snapshots"].append(name))
    name = rest[0]
    if name not in m["snapshots"]:
        raise Problem(404, f"snapshot {name!r} does not exist")
    if method == "DELETE" and len(rest) == 1:
        return accepted(world, lambda: m["snapshots"].remove(name))
    if method == "POST" and rest[1:] == ["revert"]:
        return accepted(world, lambda: m.update(power=OFF))
    raise Problem(404, "no such endpoint")


def accepted(world: World, work) -> tuple[int, object, dict]:
    op = world.operation(work)
    return 202, None, {"Location": f"/api/v1/operations/{op}"}


class Handler(BaseHTTPRequestHandler):
    world: World

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else {}
            with self.world.lock:
                status, data, headers = self._answer(url.path, query, body if isinstance(body, dict) else {})
        except Problem as exc:
            status, data, headers = exc.status, {"error": {"message": exc.message}}, {}
        except ValueError:
            status, data, headers = 400, {"error": {"message": "malformed request"}}, {}
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, path: str, query: dict, body: dict):
        if path == "/api/v1/login" and self.command == "POST":
            if body.get("user") != USER or body.get("password") != PASSWORD:
                raise Problem(401, "invalid credentials")
            token = secrets.token_hex(16)
            self.world.tokens[token] = time.monotonic() + 600
            return 200, {"token": token, "expires_in": 600}, {}
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if self.world.tokens.get(token, 0) < time.monotonic():
            raise Problem(401, "invalid or expired token")
        if path == "/api/v1/logout":
            self.world.tokens.pop(token, None)
        return route(self.world, self.command, path, query, body)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def log_message(self, fmt: str, *args) -> None:
        pass


def make_server(host: str = "127.0.0.1", port: int = 8780, world: World | None = None) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"world": world or World()})
    return ThreadingHTTPServer((host, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8780)
    args = parser.parse_args()
    server = make_server(args.host, args.port)
    print(f"tinyvisor listening on http://{args.host}:{server.server_address[1]} (user {USER}, password {PASSWORD})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
