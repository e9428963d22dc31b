"""The CPF contract in one place: methods, the params RAS sends, controls, states, reply
schemas, capabilities, snapshot names and RAS's workflows.

rpc.py checks requests with it, the compiler and sections.py check mappings with it, the
engine picks reply schemas from it, the conformance runner drives RAS's workflows with its
names, and `tools/reference_doc.py` writes the mapping author's CPF reference from it.
Extend it here; never copy a list of methods, controls or states elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

from cpfmap.errors import BackendError, InternalError, InvalidParams, InvalidRequest, MethodNotFound, ParseError


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    required: bool
    doc: str


@dataclass(frozen=True)
class Method:
    name: str
    params: tuple[Param, ...]
    reply: str | None          # schema in schemas/replies/, None: not checked
    doc: str                   # what RAS asks for
    reply_doc: str             # what the reply must hold
    level: str                 # the functionality level that needs it
    task: bool = False         # starts long work: the reply holds a task id
    mapped: bool = True        # a mapping writes it under `methods:` (else the engine answers)


ID = Param("id", str, True, "the guest id, as guests/list gave it")
NAME = Param("name", str, True, "the snapshot name (`RAS Template Snapshot` or `RAS_TEMPLATE_VERSION_<n>`)")
TASK_REPLY = "`task_id` (the engine builds it from the mapping's `task`); RAS polls tasks/get with it"

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("provider/initialize", (), "provider-initialize",
           "First call of every process.", "`version` and `capabilities` (the engine builds both from the "
           "mapping's `capabilities` section and the methods it has)", "basic", mapped=False),
    Method("provider/connect", (Param("settings", dict, True, "the administrator's key/value list from the RAS "
                                      "console; every value arrives as a string (`\"8006\"`, `\"false\"`) and "
                                      "is coerced to the setting's declared type"),),
           "empty", "Log in and prove the credentials with a real call.",
           "`{}` once the backend accepted the credentials; otherwise code 1 (`Authentication failed: ...` "
           "for HTTP 401/403)", "basic"),
    Method("provider/disconnect", (), "empty", "End the backend session.",
           "`{}`; the engine runs the mapping's steps, then the auth `logout`", "basic"),
    Method("guests/list", (), "guests-list", "Every guest RAS may manage, templates included.",
           "`{guests: [id, ...]}`: ids as strings (numbers are turned into strings, duplicates dropped)", "basic"),
    Method("guests/get", (ID,), "guests-get", "One guest.",
           "`{id, name, state, mac_addresses, ip_addresses, is_template}`: `name` is required, `state` a guest "
           "state, `is_template` a boolean; the engine normalises addresses (see Addresses) and turns a null "
           "address list into `[]`; an unknown guest is code 1 `Guest <id> not found`", "basic"),
    Method("guests/control", (ID, Param("control", str, True, "one of the controls below")), "empty",
           "A power or delete action; the mapping writes each under `controls:`, not `methods:`.",
           "`{}` once the backend accepted the action (RAS polls guests/get for the state); asking a running "
           "guest to start or a stopped one to stop must succeed", "basic", mapped=False),
    Method("tasks/get", (Param("id", str, True, "a task id this provider returned (self-contained, "
                                                "untrusted: a forged one is refused with -32602)"),),
           "tasks-get", "Poll a task; the mapping writes poll rules under `tasks:`, not `methods:`.",
           "`{state: running}`, `{state: completed, output: {...}}` (output is always an object, "
           "`{clone_id}` for a clone) or `{state: failed, error: {code: 1, message}}`", "full clones",
           mapped=False),
    Method("guests/convert", (ID, Param("is_template", bool, True, "true: make the guest a template; false: "
                                        "turn a template back into a guest (maintenance)")),
           "task-started", "Turn a guest into a template or back; must be idempotent (RAS repeats it).",
           TASK_REPLY + "; a synchronous backend still returns one (`task: {completed: {}}`)", "full clones",
           task=True),
    Method("guests/clone", (ID, Param("name", str, True, "the new guest's name"),
                            Param("snapshot", str, False, "absent, `\"\"` or the snapshot to clone from"),
                            Param("is_link_clone", bool, False, "absent means true: a linked clone is wanted "
                                  "when a snapshot is named and `is_link_clone` is not false; otherwise a full "
                                  "clone (from the snapshot if one is named)")),
           "guests-clone", "Create guest `name` from template `id`.",
           TASK_REPLY + ", and `clone_id` where the id is known up front; the completed task's `output` must "
           "hold `clone_id`", "full clones", task=True),
    Method("guests/snapshots/create", (ID, NAME), "task-started", "Take a snapshot of the guest.", TASK_REPLY,
           "snapshots", task=True),
    Method("guests/snapshots/delete", (ID, NAME), "task-started", "Delete the named snapshot.", TASK_REPLY,
           "snapshots", task=True),
    Method("guests/snapshots/revert", (ID, NAME), "task-started", "Roll the guest back to the named snapshot.",
           TASK_REPLY, "snapshots", task=True),
    Method("guests/snapshots/exists", (ID, NAME), "snapshots-exists", "Does the named snapshot exist?",
           "a bare boolean, `true` or `false` (an object would always read as true)", "snapshots"),
)}

CONTROLS: dict[str, str] = {
    "start": "power on; also resumes a paused or suspended guest (RAS sends start after suspend)",
    "stop": "power off (hard)",
    "reset": "hard reset",
    "restart": "graceful reboot",
    "suspend": "suspend; RAS sends it only if `can_suspend_guests` (advertised when the mapping has it)",
    "delete": "remove the guest from the hypervisor (Delete host); needed for template support",
}
BASIC_CONTROLS = ("start", "stop", "reset", "restart")

GUEST_STATES = ("powered_off", "powering_off", "powered_on", "powering_on", "suspended", "suspending")
TASK_STATES = ("running", "completed", "failed")

# The mapping's sections that stand for a method: `methods:` keys, and the params each sees.
MAPPED_METHODS = tuple(name for name, method in METHODS.items() if method.mapped)
TASK_METHODS = tuple(name for name, method in METHODS.items() if method.task)
SNAPSHOT_METHODS = tuple(name for name in METHODS if name.startswith("guests/snapshots/"))
RESULT_METHODS = ("guests/list", "guests/get", "guests/snapshots/exists")
REPLY_SCHEMAS = {name: method.reply for name, method in METHODS.items()
                 if method.reply and method.reply != "empty" and not name.startswith("provider/")}

# code -> when: every error reply carries one of these (classes in errors.py).
ERRORS: dict[int, str] = {
    ParseError.code: "the line is not JSON: not UTF-8, `NaN`/`Infinity`, or longer than the line limit",
    InvalidRequest.code: "JSON, but not a request: not an object, `method` missing or not a string, or a number "
                         "out of range (`1e400`); JSON-RPC's Invalid Request (RAS never sends such lines)",
    MethodNotFound.code: "unknown method, or a method or control the mapping does not implement",
    InvalidParams.code: "params missing or of the wrong type, an unknown control, a forged task id",
    InternalError.code: "a defect in the engine itself (never the backend's fault)",
    BackendError.code: "the backend refused or failed (auth, not found, HTTP error, timeout, task failure), or the "
                       "mapping, a setting or a cassette does not fit",
}

LINK_SNAPSHOT = "RAS Template Snapshot"
VERSION_NAME = "RAS_TEMPLATE_VERSION_{0}"
MAX_VERSIONS = 5

ADDRESSES = ("MAC addresses are reported lower-case and colon-separated (`00:15:5d:8a:3c:ff`); values that are "
             "not MACs are dropped. IP addresses are reported in their normal text form; loopback "
             "(`127.0.0.0/8`, `::1`), link-local (`169.254.0.0/16`, `fe80::/10`) and unspecified "
             "(`0.0.0.0`, `::`) addresses, and values that are not addresses, are dropped. Duplicates are "
             "dropped. The engine applies this to every guests/get reply; `macs()` and `ips()` apply the "
             "same rule inside an expression.")

# (name, minimum, maximum, default, meaning)
CAPABILITIES = (
    ("guests_polling_rate", 3, 900, 15, "seconds between RAS's guests/list + guests/get rounds"),
    ("tasks_polling_rate", 1, 60, 3, "seconds between RAS's tasks/get polls"),
    ("tasks_polling_retries", 0, 180, 20, "polls before RAS gives up on a task: rate x retries is the longest "
                                          "task RAS waits for"),
)
LEVELS = ("none", "basic", "versioning")

# RAS's workflows: what it calls, in order (cpf-protocol.md). The conformance runner's
# workflows (conformance/workflows.py) have these names and reproduce these sequences.
WORKFLOWS: dict[str, tuple[str, ...]] = {
    "connect": ("provider/initialize", "provider/connect", "then every `guests_polling_rate`: guests/list, and "
                "guests/get for each id"),
    "power": ("guests/control `start` | `stop` | `restart` | `reset` | `suspend`",
              "guests/get until the wanted state (`start` on a running guest and `stop` on a stopped one must "
              "succeed; `start` must resume a suspended or paused guest)"),
    "create-template": ("guests/get G: must not be a template",
                        "if not `powered_off`: guests/control `stop`, then guests/get until `powered_off`",
                        "versioning: guests/snapshots/create `RAS_TEMPLATE_VERSION_1`; linked clones without "
                        "versions: guests/snapshots/create `RAS Template Snapshot`; tasks/get until done",
                        "guests/convert G `is_template: true`; tasks/get until done",
                        "guests/get G: `is_template` must be true"),
    "create-host": ("guests/get T: must be a template",
                    "guests/clone T with `name`; with versions or linked clones also `snapshot` (and "
                    "`is_link_clone`); tasks/get until completed, then `output.clone_id`",
                    "guests/control `start` if needed; guests/get the clone until `powered_on`"),
    "maintenance": ("enter (version n): guests/get T: must be a template",
                    "guests/convert T `is_template: false`; tasks/get; guests/get T: `is_template` false",
                    "versioning: guests/snapshots/revert `RAS_TEMPLATE_VERSION_n`; tasks/get",
                    "guests/control `start` if needed; guests/get until `powered_on`",
                    "exit: guests/control `stop` if needed; guests/get until `powered_off`",
                    "versioning or linked clones: guests/snapshots/exists; if true guests/snapshots/delete and "
                    "tasks/get; then guests/snapshots/create and tasks/get",
                    "guests/convert T `is_template: true`; tasks/get; guests/get T: `is_template` true"),
    "delete-host": ("guests/control `delete`", "guests/list until the guest is gone"),
}


def signature(method: str) -> tuple[tuple[str, type, bool], ...]:
    """(name, type, required) of each param RAS sends with `method`."""
    return tuple((p.name, p.kind, p.required) for p in METHODS[method].params)


def snapshot_name(level: str, links: bool, version: int) -> str | None:
    """The snapshot RAS names for a template: versions, linked clones, or none."""
    if level == "versioning":
        return VERSION_NAME.format(version)
    return LINK_SNAPSHOT if links and level != "none" else None
