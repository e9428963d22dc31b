"""A small CPF provider over an in-memory hypervisor, correct unless told otherwise:
    python faulty_provider.py [DEFECT]
Defects planted for the conformance runner's tests: see DEFECTS."""
import json
import sys
import time

DEFECTS = ("no-output", "template-string", "stdout-log", "exists-object", "bad-state", "no-name",
           "wrong-code", "hang", "no-flip")
defect = sys.argv[1] if len(sys.argv) > 1 else ""
guests = {"1": {"name": "vm1", "state": "powered_on", "tpl": False, "snaps": set()},
          "2": {"name": "gold", "state": "powered_off", "tpl": False, "snaps": set()}}
next_id = [10]


def task(output=None):
    return {"task_id": "done:" + json.dumps(output or {})}


def guest_reply(gid):
    g = guests[gid]
    out = {"id": gid, "name": g["name"], "state": g["state"], "mac_addresses": [], "ip_addresses": [],
           "is_template": g["tpl"]}
    if defect == "template-string":
        out["is_template"] = "true" if g["tpl"] else "false"
    if defect == "bad-state":
        out["state"] = "running"
    if defect == "no-name":
        del out["name"]
    return out


def control(p):
    g = guests[p["id"]]
    if p["control"] == "delete":
        del guests[p["id"]]
    elif p["control"] in ("start", "restart", "reset"):
        g["state"] = "powered_on"
    elif p["control"] == "stop":
        g["state"] = "powered_off"
    elif p["control"] == "suspend":
        g["state"] = "suspended"
    else:
        raise KeyError(-32602)
    return {}


def clone(p):
    new = str(next_id[0])
    next_id[0] += 1
    guests[new] = {"name": p["name"], "state": "powered_off", "tpl": False, "snaps": set()}
    return dict(task({"clone_id": new}), clone_id=new)


def convert(p):
    if defect != "no-flip":
        guests[p["id"]]["tpl"] = p["is_template"]
    return task()


def tasks_get(p):
    if not p["id"].startswith("done:"):
        raise KeyError(-32602)
    if defect == "no-output":
        return {"state": "completed"}
    return {"state": "completed", "output": json.loads(p["id"][5:])}


def snap(kind):
    def run(p):
        snaps = guests[p["id"]]["snaps"]
        if kind == "exists":
            return {"exists": p["name"] in snaps} if defect == "exists-object" else p["name"] in snaps
        (snaps.add if kind == "create" else snaps.discard)(p["name"])
        return task()
    return run


METHODS = {
    "provider/initialize": lambda p: {"version": "1.0.0", "capabilities": {
        "can_suspend_guests": True, "guests_polling_rate": 3, "tasks_polling_rate": 1, "tasks_polling_retries": 5,
        "template_method": "versioning", "can_link_clones": True}},
    "provider/connect": lambda p: {}, "provider/disconnect": lambda p: {},
    "guests/list": lambda p: {"guests": list(guests)}, "guests/get": lambda p: guest_reply(p["id"]),
    "guests/control": control, "guests/clone": clone, "guests/convert": convert, "tasks/get": tasks_get,
    "guests/snapshots/create": snap("create"), "guests/snapshots/delete": snap("delete"),
    "guests/snapshots/revert": snap("revert"), "guests/snapshots/exists": snap("exists"),
}


def answer(line):
    try:
        req = json.loads(line)
    except ValueError:
        return {"error": {"code": -32700, "message": "parse error"}}
    if not isinstance(req, dict):
        return {"error": {"code": -32600, "message": "invalid request"}}
    method, params = req.get("method"), req.get("params") or {}
    if not isinstance(method, str):
        return {"error": {"code": -32600, "message": "invalid request: no method"}}
    if defect == "echo-settings" and method == "provider/connect":  # a provider that leaks what it got
        return {"error": {"code": 1, "message": f"refused settings {json.dumps(params.get('settings'))}"}}
    if method not in METHODS:
        out = {"error": {"code": 1 if defect == "wrong-code" else -32601, "message": "unknown method"}}
    else:
        try:
            if method in ("guests/get", "guests/control") and not isinstance(params.get("id"), str):
                raise KeyError(-32602)
            if method == "guests/list" and defect == "hang":
                time.sleep(3600)
            out = {"result": METHODS[method](params)}
        except KeyError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 1
            out = {"error": {"code": code, "message": f"bad request: {exc}"}}
    if "id" in req:
        out["id"] = req["id"]
    return out


for raw in sys.stdin.buffer:
    text = raw.decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not text:
        continue
    if defect == "stdout-log":
        print("INFO handling a request")
    sys.stdout.write(json.dumps(answer(text)) + "\n")
    sys.stdout.flush()
