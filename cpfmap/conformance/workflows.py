"""RAS's workflows (cpf-protocol.md, "What RAS does with these calls"), each a function of
the driver. A workflow stops at its first failing check."""
from __future__ import annotations

from typing import Any, Callable

from cpfmap.conformance.ras import Failed, Ras, schema_problem


def connect(ras: Ras) -> None:
    ras.capabilities = ras.call("provider/initialize", None, "provider-initialize")["capabilities"]
    ras.call("provider/connect", {"settings": ras.options.settings}, "empty")


def inventory(ras: Ras) -> None:
    guests = ras.call("guests/list", None, "guests-list")["guests"]
    for guest in guests:
        ras.get(guest)
    ras.state["guests"] = guests


def power(ras: Ras) -> None:
    guest = ras.options.guest
    original = ras.get(guest)["state"]
    back = {"powered_on": "powered_on", "powering_on": "powered_on", "powered_off": "powered_off",
            "powering_off": "powered_off"}.get(original)
    if back:
        ras.changed(("power", guest), f"guest {guest} is not {back} as it was",
                    lambda: ras.ensure_state(guest, back))
    ras.ensure_state(guest, "powered_on")
    ras.control(guest, "start")  # already running: must still succeed (RAS retries)
    ras.wait_state(guest, "powered_on")
    for control in ("restart", "reset"):
        ras.control(guest, control)
        ras.wait_state(guest, "powered_on")
    if ras.capabilities.get("can_suspend_guests"):
        ras.control(guest, "suspend")
        ras.wait_state(guest, "suspended")
        ras.control(guest, "start")
        ras.wait_state(guest, "powered_on")
    ras.control(guest, "stop")
    ras.wait_state(guest, "powered_off")
    ras.control(guest, "stop")  # already stopped: must still succeed
    if original in ("powered_on", "powering_on"):
        ras.control(guest, "start")
        ras.wait_state(guest, "powered_on")
    ras.undone(("power", guest))


def create_template(ras: Ras) -> None:
    guest = ras.options.template_source
    if ras.get(guest)["is_template"]:
        raise ras.fail("source is not a template", f"guest {guest} is already a template")
    ras.ensure_state(guest, "powered_off")
    name = ras.snapshot_name()
    if name:
        ras.start_task("guests/snapshots/create", {"id": guest, "name": name}, "snapshot create")
        _made_snapshot(ras, guest, name)
    _convert(ras, guest, True)
    ras.state["template"] = guest


def _made_snapshot(ras: Ras, guest: str, name: str) -> None:
    ras.changed(("snapshot", guest, name), f"snapshot {name!r} of guest {guest}",
                lambda: ras.start_task("guests/snapshots/delete", {"id": guest, "name": name}, "snapshot delete"))


def _convert(ras: Ras, guest: str, to_template: bool) -> None:
    ras.start_task("guests/convert", {"id": guest, "is_template": to_template}, "convert")
    if not ras.undone(("is_template", guest)):
        ras.changed(("is_template", guest), f"guest {guest} {'made a template' if to_template else 'turned into a VM'}",
                    lambda: _put_back(ras, guest, not to_template))
    if ras.get(guest)["is_template"] is not to_template:
        raise ras.fail("is_template flips after convert", f"is_template is not {to_template}",
                       expected=str(to_template).lower())
    ras.passed(f"is_template is {str(to_template).lower()} after convert")


def _put_back(ras: Ras, guest: str, to_template: bool) -> None:
    if to_template:
        ras.ensure_state(guest, "powered_off")
    ras.start_task("guests/convert", {"id": guest, "is_template": to_template}, "convert")


def create_host(ras: Ras) -> None:
    template = _template(ras)
    if not ras.get(template)["is_template"]:
        raise ras.fail("clone source is a template", f"guest {template} is not a template")
    params: dict[str, Any] = {"id": template, "name": ras.options.clone_name}
    snapshot = ras.snapshot_name()
    if snapshot:
        params.update(snapshot=snapshot, is_link_clone=ras.links)
    output = ras.start_task("guests/clone", params, "clone", "guests-clone")
    started = output.pop("_started")
    problem = schema_problem("clone-task-output", output)
    if problem:
        raise ras.fail("completed clone task has output.clone_id", problem, reply=output,
                       expected="schemas/replies/clone-task-output.json")
    clone = output["clone_id"]
    ras.changed(("guest", clone), f"host {clone} ({ras.options.clone_name})", lambda: _delete(ras, clone))
    announced = started.get("clone_id")
    if announced is not None and announced != clone:
        raise ras.fail("clone_id in the reply matches the task output", f"{announced} != {clone}")
    if clone not in ras.call("guests/list", None, "guests-list")["guests"]:
        raise ras.fail("the clone appears in guests/list", f"{clone} is not listed")
    if ras.get(clone)["name"] != ras.options.clone_name:
        raise ras.fail("the clone has the requested name", ras.get(clone)["name"], expected=ras.options.clone_name)
    ras.passed("the clone is listed with its name")
    ras.ensure_state(clone, "powered_on")
    ras.state["clone"] = clone


def maintenance(ras: Ras) -> None:
    template = _template(ras)
    version = ras.options.version
    # enter
    if not ras.get(template)["is_template"]:
        raise ras.fail("maintenance starts on a template", f"guest {template} is not a template")
    _convert(ras, template, False)
    if ras.level == "versioning":
        ras.start_task("guests/snapshots/revert", {"id": template, "name": ras.snapshot_name(version)}, "revert")
    ras.ensure_state(template, "powered_on")
    # exit: with versioning RAS offers the next version (RAS_TEMPLATE_VERSION_<n+1>); with linked
    # clones it replaces the one template snapshot
    ras.ensure_state(template, "powered_off")
    name = ras.snapshot_name(version + 1 if ras.level == "versioning" else version)
    if name:
        exists = ras.call("guests/snapshots/exists", {"id": template, "name": name}, "snapshots-exists")
        ours = False
        if exists:
            ras.start_task("guests/snapshots/delete", {"id": template, "name": name}, "snapshot delete")
            ours = ras.undone(("snapshot", template, name))
            if ras.call("guests/snapshots/exists", {"id": template, "name": name}, "snapshots-exists"):
                raise ras.fail("a deleted snapshot no longer exists", f"{name} still exists")
        ras.start_task("guests/snapshots/create", {"id": template, "name": name}, "snapshot create")
        if ours or not exists:
            _made_snapshot(ras, template, name)
        if not ras.call("guests/snapshots/exists", {"id": template, "name": name}, "snapshots-exists"):
            raise ras.fail("a created snapshot exists", f"{name} does not exist")
    _convert(ras, template, True)


def delete_host(ras: Ras) -> None:
    clone = ras.state.get("clone") or ras.options.host
    if clone is None:
        raise ras.fail("a host to delete", "create-host did not make one")
    _delete(ras, clone)
    ras.passed("the deleted host leaves guests/list")
    ras.undone(("guest", clone))


def _delete(ras: Ras, clone: str) -> None:
    ras.control(clone, "delete")
    for _ in range(ras.options.state_polls):
        if clone not in ras.call("guests/list", None, "guests-list")["guests"]:
            return
        ras.sleep(max(ras.capabilities.get("guests_polling_rate", 15) * ras.options.time_scale, 0.05))
    raise ras.fail("the deleted host leaves guests/list", f"{clone} is still listed")


def _template(ras: Ras) -> str:
    template = ras.state.get("template") or ras.options.template
    if template is None:
        raise ras.fail("a template to work on", "give --template or run create-template")
    return template


# name -> (function, why it would not run, or None)
WORKFLOWS: dict[str, Callable[[Ras], None]] = {
    "connect": connect, "inventory": inventory, "power": power, "create-template": create_template,
    "create-host": create_host, "maintenance": maintenance, "delete-host": delete_host,
}


def skip_reason(name: str, ras: Ras) -> str | None:
    if name == "power" and not ras.options.guest:
        return "no --guest given"
    if name in ("create-template", "create-host", "maintenance", "delete-host") and ras.level == "none":
        return "the provider advertises template_method none"
    if name == "create-template" and not ras.options.template_source:
        return "no --template-source given"
    if name in ("create-host", "maintenance") and not (ras.state.get("template") or ras.options.template):
        if ras.options.template_source:
            return f"create-template did not make guest {ras.options.template_source} a template (see above)"
        return "no template (give --template or --template-source)"
    if name == "delete-host" and not (ras.state.get("clone") or ras.options.host):
        return "no host (give --host or run create-host)"
    return None


__all__ = ["WORKFLOWS", "skip_reason", "Failed"]
