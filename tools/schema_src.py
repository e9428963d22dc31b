"""Source of schemas/mapping.schema.json (run `python tools/schema_src.py` to regenerate).

Written as Python so shared pieces (a request, a step, a value) are defined once; the
JSON file is what editors, validators and the engine read. A test fails when it is stale.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "schemas" / "mapping.schema.json"
sys.path.insert(0, str(ROOT))
from cpfmap.authoring import reference  # noqa: E402 - the CPF contract: method and control names, capability ranges
from cpfmap.protocol import contract  # noqa: E402


def prop(description: str, example=None, **schema) -> dict:
    out = {"description": description, **schema}
    if example is not None:
        out["examples"] = [example]
    return out


def obj(description: str, properties: dict, required=(), example=None, **extra) -> dict:
    out = prop(description, example, type="object", properties=properties, additionalProperties=False, **extra)
    if required:
        out["required"] = list(required)
    return out


def _method_doc(name: str) -> str:
    """What RAS sends and expects for a method (docs/cpf-reference.md has the whole contract)."""
    method = contract.METHODS[name]
    params = ", ".join(f"{p.name}{'' if p.required else ' (optional)'}" for p in method.params) or "none"
    return f"{method.doc} Params: {params}. Reply: {method.reply_doc}."


REF = lambda name: {"$ref": f"#/$defs/{name}"}  # noqa: E731
TEMPLATE = "a Jinja2 template (sandboxed, strict: an undefined name is an error)"

DEFS = {
    "template": prop(f"Text or {TEMPLATE}. A string that is exactly one `{{{{ expression }}}}` yields the "
                     "expression's own value (number, list, object), not text.",
                     "{{ settings.host }}", type="string"),
    "value": prop("A value built when the method runs: literals are kept as they are; strings are "
                  f"{TEMPLATE}; an object `{{jmespath: EXPR}}` evaluates JMESPath over the variables "
                  "(settings, params, step variables); an object `{literal: X}` is X exactly as written "
                  "(never rendered; in a request, sent even if it is or holds null); objects and lists are "
                  "built member by member. In a request (query, form, headers, json) one null rule holds: "
                  "an object member whose value is null is left out, at any depth; list items and empty "
                  "text are sent; `{literal: null}` sends a JSON null (json) or an empty value (query, form), and "
                  "`json_null` does the same inside a template (`{{ {'os-start': json_null} }}`).",
                  {"id": "{{ params.id }}", "name": "{{ vm.name }}"}),
    "jmespath": prop("A JMESPath expression, compiled when the mapping loads. Extra functions (see Functions): "
                     + ", ".join(reference.jmespath_functions()) + ".",
                     "data[?type=='qemu'].vmid", type="string", minLength=1),
    "statuses": prop("HTTP status codes.", [200, 201], type="array", items={"type": "integer", "minimum": 100,
                                                                             "maximum": 599}),
    "request": obj("An HTTP request. Path is joined to connection.base_url; every value inserted into "
                   "the path is percent-encoded (a `/` in a value becomes %2F) unless it goes through "
                   "`raw_path`.", {
                       "method": prop("HTTP method.", "GET", type="string",
                                      enum=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
                       "path": prop(f"URL path below base_url, {TEMPLATE}; an absolute URL is allowed "
                                    "only if it starts with base_url. `{{ value | raw_path }}` inserts a path "
                                    "whole (slashes, ?, &, = and %XX kept; dot segments, spaces, backslashes "
                                    "and # refused); a path that is only `{{ link | raw_path }}` is a link as "
                                    "a backend gives it: a URL below base_url, or a path from the host root "
                                    "(`/api/v1/jobs/7`) on base_url's host.",
                                    "/nodes/{{ node }}/qemu/{{ params.id }}/status/current", type="string"),
                       "query": prop("Query parameters: name -> value (a list repeats the name; null "
                                     "leaves it out, `{literal: null}` sends it empty), or a template that "
                                     "yields such an object (`{{ {'Action': 'DescribeInstances', 'InstanceId': "
                                     "[params.id]} | numbered }}`).", {"type": "vm"}, type=["object", "string"]),
                       "headers": prop("Extra headers for this request (templates).",
                                       {"Accept": "application/json"}, type="object",
                                       additionalProperties={"type": "string"}),
                       "json": prop("A JSON body (value); a member whose value is null is left out, at "
                                    "any depth; `{literal: null}` sends a JSON null.",
                                    {"name": "{{ params.name }}", "note": {"literal": None}}),
                       "form": prop("A form-encoded body: name -> value (null leaves it out, "
                                    "`{literal: null}` sends it empty), or a template that yields such an "
                                    "object.", {"newid": "{{ newid }}"}, type=["object", "string"]),
                       "body": prop("A raw text body (template), with content_type.", "<xml/>", type="string"),
                       "content_type": prop("Content-Type of a `json` body (default application/json, e.g. "
                                            "`application/merge-patch+json`) or a `body` (default text/plain); "
                                            "a form is always application/x-www-form-urlencoded. Give it here, "
                                            "not as a Content-Type header.", "application/xml", type="string"),
                       "endpoint": prop("Join the path to this service URL from the session login "
                                        "(auth login.endpoints, e.g. a service catalog) instead of base_url.",
                                        "compute", type="string", pattern="^[A-Za-z_][A-Za-z0-9_]*$"),
                   }, required=["method", "path"], example={"method": "GET", "path": "/cluster/resources"}),
    "extraction": prop("A step variable: a JMESPath expression over the reply body, or an object "
                       "with options.", "data.name", oneOf=[
                           REF("jmespath"),
                           obj("An extraction with options.", {
                               "jmespath": REF("jmespath"),
                               "from": prop("What the expression reads: the JSON `body` (default), "
                                            "the `headers` (lower-case names), the `status` code, the HTTP "
                                            "`reason` phrase, the `entry` the step's `index.lookup` found "
                                            "(null if none), or the body's `text` whatever its content type.",
                                            "headers", enum=["body", "headers", "status", "reason", "entry", "text"]),
                               "default": prop("Value used when the expression yields null.", []),
                               "required": prop("If the expression yields null: fail with this "
                                                f"message ({TEMPLATE}).", "Guest {{ params.id }} not found",
                                                type="string"),
                           }, required=["jmespath"])]),
    "on_error": obj("What to do when the backend refuses a request (status not accepted, or no answer "
                    "when status lists 0). The first rule that matches applies.", {
                        "status": prop("Statuses this rule covers (0: no HTTP answer at all); any if "
                                       "absent.", [500], type="array",
                                       items={"type": "integer", "minimum": 0, "maximum": 599}),
                        "match": prop("A regular expression searched in the backend's error message.",
                                      "does not exist", type="string"),
                        "fail": prop(f"Fail the call with this message ({TEMPLATE}; `error.status`, "
                                     "`error.message`, `error.reason` (the HTTP reason phrase) and "
                                     "`error.body` (the reply's JSON, or null) hold the backend's answer).",
                                     "Guest {{ params.id }} not found", type="string"),
                        "set": prop("Carry on, setting these step variables (values over the step's "
                                    "variables and `error`) instead; the step's `extract` does not run.",
                                    {"ips": []}, type="object"),
                        "wait": prop("With `set`: whether the step's `wait` still runs after this rule "
                                     "recovered (default true; `set` can give its handle, e.g. "
                                     "`{upid: \"{{ error.body.data }}\"}`). false: there is no task to "
                                     "wait for (e.g. 404, already gone).", False, type="boolean"),
                        "retry": obj("Run the steps again from the named earlier step (or this one) when "
                                     "the backend refused the request outright, e.g. a new id after "
                                     "\"already exists\"; after `times` refusals the call fails with the "
                                     "backend's message. A rule without `status` also covers the failure of "
                                     "the task the step waits for (`wait`), when its message matches: a task "
                                     "that failed before it did anything (e.g. a clone worker that found its "
                                     "new id taken); only while the reply waits: after the wait was cut at "
                                     "the reply deadline, that failure is the failure of the method's "
                                     "task.", {
                                         "times": prop("Refusals before giving up.", 5, type="integer",
                                                       minimum=1, maximum=20),
                                         "from": prop("Name of an earlier step of the same operation to "
                                                      "run again from; this step if absent.",
                                                      "next free VMID", type="string"),
                                     }, required=["times"], example={"times": 8, "from": "next free VMID"}),
                    }, example={"status": [500], "match": "agent is not running", "set": {"ips": []}}),
    "refusal": obj("A backend refusal: its status and/or a pattern in its message.", {
        "status": prop("Statuses it covers; any if absent (a task's failure has none).", [500], type="array",
                       items={"type": "integer", "minimum": 100, "maximum": 599}),
        "match": prop("A regular expression searched in the backend's error message.", "already (used|exists)",
                      type="string"),
    }, example={"status": [409], "match": "already exists"}),
    "lookup": obj("For a request that must not run twice (a create): after it got no answer, these steps "
                  "find out whether it took effect. If `found` is true, the step succeeds with the lookup's "
                  "variables standing in for its extractions (its `wait` is skipped); if false, the request "
                  "is sent again (up to connection.retries attempts in all), except after a read timeout "
                  "(the backend may still be at work): then the call fails. When that repeat is refused, or "
                  "the task it waits for fails, the steps look once more before `on_error` applies: the "
                  "first attempt may have taken effect after they looked (a connection that dropped before "
                  "the backend answered), and the refusal be its doing (its new id taken). When the steps "
                  "themselves fail (or a `wait` among them reaches the reply deadline), the call fails "
                  "and the request is not sent again.", {
                      "steps": REF("steps"),
                      "found": prop(f"True if the request took effect ({TEMPLATE}; one expression).",
                                    "{{ made is not none }}", type="string"),
                  }, required=["steps", "found"], example={
                      "steps": [{"request": {"method": "GET", "path": "/vms", "query": {"name": "{{ params.name }}"}},
                                 "extract": {"made": "items[0].id"}}],
                      "found": "{{ made is not none }}"}),
    "paginate": obj("Fetch every page of a list and extract from all items joined (a request with a "
                    "`form` carries the paging parameters in its form, as Query APIs read them). Each type takes "
                    "only its own options (validate names the ones it takes): offset: size, limit_param, "
                    "offset_param; page: size, limit_param, page_param, first_page; cursor: cursor, "
                    "cursor_from, cursor_param, size, limit_param; next_link: cursor, cursor_from, size, "
                    "limit_param; link_header: size, limit_param; every type: items, max_pages.", {
        "type": prop("offset: offset/limit parameters; page: page number; cursor: a token from each "
                     "reply (body or headers) sent back as a query parameter; next_link: a URL from each "
                     "reply (body or headers); link_header: the URL of the `Link` header's rel=\"next\" "
                     "(RFC 8288, as GitHub and many others page). A URL to follow must be below base_url.",
                     "offset", enum=["offset", "page", "cursor", "next_link", "link_header"]),
        "items": REF("jmespath"),
        "size": prop("Items per page: a number, or a template such as `{{ settings.page_size }}`. "
                     "offset and page: default 100, a shorter page is the last. cursor: sent with every "
                     "request; next_link and link_header: sent with the first (the links carry it on); "
                     "omitted if absent.", 100,
                     oneOf=[{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "\\{\\{"}]),
        "limit_param": prop("Query name for the page size (default `limit`).", "limit", type="string"),
        "offset_param": prop("Query name for the offset (offset; default `offset`).", "offset", type="string"),
        "page_param": prop("Query name for the page number (page; default `page`).", "page", type="string"),
        "first_page": prop("Number of the first page (page; default 1).", 1, type="integer", minimum=0),
        "cursor": prop("JMESPath to the next cursor (cursor), or to the next URL (next_link), over the "
                       "body or the headers (see cursor_from); null or empty ends.", "next_cursor",
                       type="string"),
        "cursor_from": prop("What `cursor` reads: the JSON `body` (default) or the `headers` (lower-case "
                            "names, e.g. `\"x-next-cursor\"`).", "headers", enum=["body", "headers"]),
        "cursor_param": prop("Query name for the cursor (cursor; default `cursor`).", "cursor", type="string"),
        "max_pages": prop("Safety limit on pages; more is an error (default 1000).", 1000, type="integer",
                          minimum=1),
    }, required=["type", "items"], example={"type": "offset", "items": "items", "size": 50}),
    "step": obj("One step of a method: a request, a computed variable, a check or a fragment.", {
        "name": prop("Name for messages.", "resolve node", type="string"),
        "use": prop("Insert the steps of this fragment (see `fragments`). A `use` step takes only "
                    "`when` (then the whole fragment runs only if it is true) and `name`.", "resolve_node",
                    type="string"),
        "when": prop(f"Run the step only if this ({TEMPLATE}) is true.", "{{ params.snapshot }}",
                     type="string"),
        "request": REF("request"),
        "accept": REF("statuses"),
        "idempotent": prop("Repeating this request is harmless (start, stop, a tag update), so it is sent "
                           "again like a GET: after no answer (the connection dropped: it may or may not "
                           "have run) and after 429, 502, 503, 504. Without it (and without a `lookup`) a "
                           "write that got no answer is never re-sent: the call fails.", True, type="boolean"),
        "refused_if": prop("JMESPath over an accepted reply's body: a value other than null, false or "
                           "empty means the backend refused the request inside a successful reply (RPC-style "
                           "`{\"error\": {...}}` in a 200). Its message is that value when it is text, else "
                           "`connection.error_message` over the body; then `already_done`, `on_error` (with "
                           "the HTTP status) and `wait` treat it as any refusal. Default: "
                           "`connection.refused_if`.", "error", **REF("jmespath")),
        "already_done": prop("Refusals that, in answer to a repeat of this request (sent again after an "
                             "attempt that got no answer), mean the first attempt took effect: the step "
                             "succeeds without extractions (they stay undefined) and skips its `wait`. Also "
                             "read against the failure message of the task the step waits for. Needs "
                             "`idempotent` or a `lookup`; a refusal of a first attempt is an error as usual.",
                             [{"match": "already running"}], type="array", items=REF("refusal")),
        "lookup": REF("lookup"),
        "cache": prop("Freshness: seconds a GET reply is reused, by every call that makes the same request, "
                      "before it is fetched again (state: seconds; MAC addresses: minutes). Concurrent "
                      "callers share one request. A write made while serving a call for a guest "
                      "(control, convert, snapshot, clone, delete) drops the replies whose path names that "
                      "guest and every shared reply (`index` replies, paths naming no guest); a task seen finishing "
                      "drops the shared replies. Under record and replay, age is counted on a logical "
                      "clock (one second per CPF request plus the engine's own waits), so a recording "
                      "replays the same however fast it ran.", 5, type="number", minimum=0),
        "index": obj("Read the cached reply as a collection indexed by a key, built once per fetch: "
                     "the per-guest step is a dictionary lookup, not a filter over every item. Keys "
                     "compare as text. A key missing from a reused reply fetches it again once (the "
                     "guest may be newer than the reply). Needs `cache`.", {
                         "items": prop("JMESPath to the list of items in the body (no `var()`: "
                                       "the index is shared by every call).", "data[?type=='qemu']",
                                       type="string"),
                         "key": prop("JMESPath to an item's key.", "vmid", type="string"),
                         "lookup": prop(f"The key this call wants ({TEMPLATE}); extractions with "
                                        "`from: entry` read its item.", "{{ params.id }}", type="string"),
                     }, required=["items", "key"],
                     example={"items": "data", "key": "vmid", "lookup": "{{ params.id }}"}),
        "prefetch": obj("Refresh this cached reply in the background, on a pool of at most "
                        "`concurrency` workers, for details with no bulk source (guest-agent "
                        "addresses): a call gets the value at hand at once while a stale one is "
                        "refreshed, and waits at most `wait` seconds for a first one (then the "
                        "extractions' defaults apply; callers of one step wait within a budget: 1 s at "
                        "once, then a twentieth of the time). Replies of any status are kept for `cache` "
                        "seconds; a refresh that got no answer is never kept (the older answer stays). "
                        "First answers are spread over one lifetime so a sweep's refreshes "
                        "do not all fall due together, and a live server refreshes stale replies at "
                        "most at the steady rate (the step's keys per `cache` seconds), serving the "
                        "stale value meanwhile, never one older than 2 x `cache` seconds (counted "
                        "from its request's start). Under record and replay refreshes run inline, unbudgeted. "
                        "Needs `cache`.", {
                            "concurrency": prop("Workers (requests at once) for this step.", 4,
                                                type="integer", minimum=1, maximum=64),
                            "wait": prop("Seconds a call waits for a first answer.", 1, type="number",
                                         minimum=0, maximum=60),
                        }, example={"concurrency": 4, "wait": 1}),
        "paginate": REF("paginate"),
        "for_each": prop("Send this read (GET or HEAD) once per item of a list (a value), one at a time, "
                         "with the item as `item` in the request, extractions and on_error rules: each "
                         "extraction (and each on_error `set` name) becomes a list of the items' values, in "
                         "the items' order; an empty list sends nothing. For details one per item with no "
                         "bulk source, e.g. the log of each task a list names. Not with cache, index, "
                         "prefetch, paginate, lookup, wait, remember, idempotent, already_done or an "
                         "on_error `retry`.", "{{ tasks }}"),
        "extract": prop("Step variables from the reply: name -> extraction.", {"node": "data.node"},
                        type="object", additionalProperties=REF("extraction")),
        "set": prop("Step variables computed from values: name -> value.", {"newid": "{{ nextid | int }}"},
                    type="object"),
        "remember": prop("Values this provider keeps for its lifetime (lost when it restarts): name -> "
                         "value (a value or a list of values, each kept as text), run after the step's "
                         "`set` and request. Every later call sees `remembered.NAME`: the values kept "
                         "under that name, oldest first, the newest 1,000 (values over 1,024 characters "
                         "are refused). For what a backend forgets too soon, e.g. ids recently handed out "
                         "or deleted, which the backend's own 'next free id' would hand out again. "
                         "`{value: V, for: SECONDS}` keeps V only that long (on the engine's clock), e.g. the "
                         "guests written to in the last minute, while a backend's bulk list may still show "
                         "them as they were.",
                         {"vmids": "{{ newid }}", "written": {"value": "{{ params.id }}", "for": 60}},
                         type="object", additionalProperties=True),
        "fail": prop(f"Fail the call with this message ({TEMPLATE}); use with `when`.",
                     "Guest {{ params.id }} not found", type="string"),
        "on_error": prop("Rules for a refused request.", [{"status": [404], "fail": "Guest {{ params.id }} not found"}],
                         type="array", items=REF("on_error")),
        "wait": REF("wait"),
    }, example={"request": {"method": "GET", "path": "/version"}}),
    "steps": prop("Steps run in order; variables of earlier steps are visible to later ones.",
                  [{"use": "resolve_vm"}, {"request": {"method": "GET", "path": "/vms/{{ params.id }}"},
                                           "extract": {"vm": "@"}}], type="array", items=REF("step")),
    "task": obj("The method starts long work: how to build the self-contained task id.", {
        "poll": prop("Name of the poll rule under `tasks` that polls this task.", "pve", type="string"),
        "handle": prop("Values carried inside the task id (strings), checked against the poll rule's "
                       "handle patterns.", {"upid": "{{ upid }}", "node": "{{ node }}"}, type="object",
                       additionalProperties=REF("template")),
        "completed": prop("The work is already done (synchronous backend): the task reports completed "
                          "with this output (values).", {"clone_id": "{{ newid }}"}, type="object"),
        "when": prop(f"Start a task only if this ({TEMPLATE}) is true; otherwise the work was not needed "
                     "and the task reports completed at once (idempotent convert).", "{{ upid is defined }}",
                     type="string"),
        "output": prop("With `poll`: the output of this method's task once it completes (value over the "
                       "poll rule's variables: `task.*` and its step variables), instead of the poll "
                       "rule's `output`. For output that only one kind of operation has, e.g. the clone id "
                       "in the job result, while snapshot tasks of the same rule give none.",
                       {"clone_id": "{{ job.result.vm_id }}"}),
    }, example={"poll": "pve", "handle": {"upid": "{{ upid }}", "node": "{{ node }}"}}),
    "wait": obj("Wait for the backend task this step started before the next step (or the reply), "
                "so its failure is reported: e.g. stop a VM, then destroy it. The wait ends at "
                "`connection.reply_deadline`; in a method with a `task`, when no later step sends a "
                "request, the rest of the steps run and the wait goes on behind the method's task id: "
                "tasks/get reports it running until it completes, and its failure is the task's failure "
                "(an `on_error` `retry` for it applies only while the reply waits).", {
                    "poll": prop("Name of the poll rule under `tasks`.", "pve", type="string"),
                    "handle": prop("Values identifying the task (templates).", {"upid": "{{ upid }}"},
                                   type="object", additionalProperties=REF("template")),
                }, required=["poll", "handle"], example={"poll": "pve", "handle": {"upid": "{{ upid }}"}}),
    "operation": obj("What one CPF method (or control) does.", {
        "description": prop("What this does on the backend.", "Stop the VM (hard).", type="string"),
        "steps": REF("steps"),
        "task": REF("task"),
        "result": prop("The CPF result (value). For task methods, extra members beside task_id "
                       "(clone_id).", {"guests": "{{ ids }}"}),
    }, example={"steps": [{"request": {"method": "GET", "path": "/version"}}]}),
    "handle_key": obj("One value carried in a task id.", {
        "pattern": prop("Regular expression the whole value must match (forged ids are refused).",
                        "^[A-Za-z0-9-]+$", type="string"),
        "required": prop("The id must carry this key.", True, type="boolean"),
    }, required=["pattern"], example={"pattern": "[0-9a-f]{8}", "required": True}),
    "poll_rule": obj("How to poll one kind of backend task.", {
        "description": prop("What kind of task.", "A PVE worker task (UPID).", type="string"),
        "handle": prop("The values a task id carries, each with the pattern it must match.",
                       {"upid": {"pattern": "^UPID:[^/]+$"}}, type="object",
                       additionalProperties=REF("handle_key")),
        "steps": REF("steps"),
        "state": prop("running, completed or failed (value; `task.<key>` holds the handle).",
                      "{{ poll | translate('pve_task') }}"),
        "error": prop(f"Message of a failed task ({TEMPLATE}).", "{{ poll.exitstatus }}", type="string"),
        "output": prop("Output of a completed task (value); {} if absent. A method's `task.output` "
                       "replaces it for the tasks that method starts.", {"clone_id": "{{ task.clone_id }}"}),
    }, required=["handle", "steps", "state"], example={
        "handle": {"job": {"pattern": "[0-9a-f]{8}"}},
        "steps": [{"request": {"method": "GET", "path": "/jobs/{{ task.job }}"}, "extract": {"job": "@"}}],
        "state": "{{ job.status | translate('job') }}", "error": "{{ job.message }}"}),
    "matcher": prop("A condition on one field: a value, a list of values, null (absent or empty), or "
                    "{regex: PATTERN}.", "running"),
    "table": obj("A translation table: backend value(s) -> CPF value.", {
        "kind": prop("What the values are, checked at load: guest_state (the six CPF states), "
                     "task_state (running, completed, failed) or any.", "guest_state",
                     enum=["guest_state", "task_state", "any"]),
        "map": prop("Single value -> result (keys compared as text).", {"running": "powered_on"},
                    type="object"),
        "rules": prop("Ordered rules over several fields of an object; the first whose `when` all "
                      "match wins.", [{"when": {"status": "running", "qmpstatus": "paused"}, "then": "suspended"}],
                      type="array", items=obj("One rule.", {
                          "when": prop("field -> matcher; all must match. A dotted field (`transition.kind`) reads a "
                                      "nested member, unless the object has a member of that exact name.", {"status": "running"},
                                       type="object", additionalProperties=REF("matcher")),
                          "then": prop("The result.", "powered_on"),
                      }, required=["when", "then"])),
        "default": prop("Result for a value with no entry; without it such a value is an error.",
                        "powered_off"),
    }, example={"kind": "guest_state", "map": {"running": "powered_on", "stopped": "powered_off"}}),
    "setting": obj("A RAS custom setting the mapping reads (RAS sends every value as a string).", {
        "type": prop("The value's type after coercion from RAS's string.", "integer",
                     enum=["string", "integer", "boolean"]),
        "required": prop("connect fails without it.", True, type="boolean"),
        "default": prop("Value when RAS does not send it (or sends an empty string).", 8006),
        "secret": prop("Never shown in replies, logs or recordings.", True, type="boolean"),
        "description": prop("What the administrator enters.", "API port of the cluster.", type="string"),
        "choices": prop("Allowed values.", ["a", "b"], type="array"),
    }, example={"type": "integer", "default": 8006, "description": "API port."}),
    "auth_scheme": obj("One way to authenticate; the first scheme whose `when` holds is used.", {
        "name": prop("Name for messages.", "api-token", type="string"),
        "when": prop(f"Use this scheme only if true ({TEMPLATE}).", "{{ settings.token_secret != '' }}",
                     type="string"),
        "type": prop("none; header: static headers; basic: username/password; bearer: a token; "
                     "session: a login request whose reply yields credentials; aws_sigv4: every request "
                     "signed with AWS Signature Version 4 (access_key, secret_key, region, service, "
                     "session_token; checked against AWS's published test suite); python: every request "
                     "signed by a function of the pack's own module (`sign`).", "session",
                     enum=["none", "header", "basic", "bearer", "session", "aws_sigv4", "python"]),
        "headers": prop("header: headers sent on every request (templates).",
                        {"Authorization": "PVEAPIToken={{ settings.username }}!{{ settings.token_name }}"
                                          "={{ settings.token_secret }}"}, type="object",
                        additionalProperties=REF("template")),
        "username": REF("template"), "password": REF("template"), "token": REF("template"),
        "login": obj("session: the login request and what it yields.", {
            "request": REF("request"),
            "accept": REF("statuses"),
            "extract": prop("Credentials from the reply: name -> extraction, visible as auth.NAME; "
                            "all are secrets (see `public`).", {"ticket": "data.ticket"}, type="object",
                            additionalProperties=REF("extraction")),
            "public": prop("Field names of the login request and reply that are not secret (e.g. the "
                           "user name, a token type, its expiry time); an extraction of that name "
                           "(auth.NAME) is not a secret either. Every other value of the login exchange (request "
                           "query, form and JSON values, except text written as is; reply JSON values, "
                           "cookies and credential headers) is masked wherever it appears, extracted or not.",
                           ["username", "token_type"], type="array", items={"type": "string"}),
            "endpoints": prop("Service URLs from the reply (e.g. a service catalog): name -> extraction, "
                              "each an http(s) URL that requests name with `endpoint`; not secrets.",
                              {"compute": "token.catalog[?type=='compute'] | [0].endpoints[0].url"},
                              type="object", additionalProperties=REF("extraction"),
                              propertyNames={"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
        }, required=["request", "extract"], example={
            "request": {"method": "POST", "path": "/login", "json": {"user": "{{ settings.username }}"}},
            "extract": {"token": "token"}}),
        "inject": obj("session: how credentials go on each later request.", {
            "headers": prop("Headers (templates over auth.*).",
                            {"CSRFPreventionToken": "{{ auth.csrf }}"}, type="object",
                            additionalProperties=REF("template")),
            "cookies": prop("Cookies (templates over auth.*).", {"PVEAuthCookie": "{{ auth.ticket }}"},
                            type="object", additionalProperties=REF("template")),
            "query": prop("Query parameters (templates over auth.*).", {"sid": "{{ auth.sid }}"},
                          type="object", additionalProperties=REF("template")),
        }, example={"headers": {"Authorization": "Bearer {{ auth.token }}"}}),
        "refresh": obj("session: renew the session with values of the previous one, e.g. an OAuth2 "
                       "refresh token (`{{ auth.refresh_token }}`). Used instead of `login` once a session "
                       "exists (its ttl ran out, or a 401); if the backend refuses it (status not "
                       "accepted) a fresh `login` follows. Values its reply lacks keep the previous "
                       "session's.", {
                           "request": REF("request"),
                           "accept": REF("statuses"),
                           "extract": prop("Credentials from the reply (default: the login's extract), "
                                           "visible as auth.NAME.", {"token": "access_token"}, type="object",
                                           additionalProperties=REF("extraction")),
                       }, required=["request"], example={
                           "request": {"method": "POST", "path": "/oauth/token", "form": {
                               "grant_type": "refresh_token", "refresh_token": "{{ auth.refresh_token }}"}}}),
        "ttl": prop("session: seconds a login stays good; log in again (or `refresh`) before it runs out. "
                    f"A number, or {TEMPLATE} over the login reply's values (auth.*), rendered after each "
                    "login: `{{ auth.expires_in - 30 }}`. Real time, under `record` too (a replay makes no "
                    "logins of its own).", 7000,
                    oneOf=[{"type": "number", "minimum": 1}, {"type": "string", "pattern": "\\{\\{"}]),
        "logout": REF("request"),
        "access_key": prop(f"aws_sigv4: the access key id ({TEMPLATE}).", "{{ settings.access_key }}",
                           type="string"),
        "secret_key": prop(f"aws_sigv4: the secret access key ({TEMPLATE}); a secret, like every "
                           "signature made with it.", "{{ settings.secret_key }}", type="string"),
        "session_token": prop(f"aws_sigv4: the session token of temporary credentials ({TEMPLATE}); "
                              "sent (and signed) as X-Amz-Security-Token when not empty; a secret.",
                              "{{ settings.session_token }}", type="string"),
        "region": prop(f"aws_sigv4: the region in the signature's scope ({TEMPLATE}).", "{{ settings.region }}",
                       type="string"),
        "service": prop(f"aws_sigv4: the service in the signature's scope ({TEMPLATE}).", "ec2", type="string"),
        "sign": prop("python: the name of a signing function the mapping's `python.auth` declares; it gets "
                     "the request as it goes out ({method, url, headers, body, time}) and the settings, and "
                     "returns the headers to add (secrets).", "vendor_hmac", type="string"),
    }, required=["type"], example={"name": "api-token", "type": "bearer", "token": "{{ settings.token }}"}),
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://cpfmap.invalid/schemas/mapping.schema.json",
    "title": "cpfmap mapping",
    "description": "A declarative CPF provider: what Parallels RAS asks, and the HTTP calls that answer it.",
    "type": "object",
    "additionalProperties": False,
    "required": ["cpfmap", "metadata", "connection", "methods"],
    "properties": {
        "$schema": prop("Editor hint; ignored.", "../../schemas/mapping.schema.json", type="string"),
        "cpfmap": prop("Mapping language version.", 1, const=1),
        "extends": prop("A mapping file (relative to this one, inside the folder of the mapping being "
                        "loaded or of a known pack; anything else is refused) that this one overrides: each section "
                        "merges entry by entry, an entry given here (a method, control, fragment, table, "
                        "setting, connection option) replaces the base's whole, null removes it.",
                        "mapping.yaml",
                        type="string"),
        "metadata": obj("About the mapping.", {
            "name": prop("Short name.", "proxmox-ve", type="string", minLength=1),
            "version": prop("The mapping's own version.", "1.0.0", type="string"),
            "description": prop("What it drives, in a sentence.", "Proxmox VE 8/9 via its REST API.",
                                type="string"),
            "vendor": prop("Who ships it.", "cpfmap", type="string"),
            "engine": prop("Engine versions it needs, as >=X.Y.", ">=0.1", type="string",
                           pattern=r"^>=\d+(\.\d+)*$"),
        }, required=["name"], example={"name": "proxmox-ve", "version": "1.0.0", "engine": ">=0.1"}),
        "settings": prop("The RAS custom settings: name -> setting.",
                         {"host": {"type": "string", "required": True}}, type="object",
                         additionalProperties=REF("setting")),
        "connection": obj("How to reach the backend.", {
            "base_url": prop(f"Base URL ({TEMPLATE}).", "https://{{ settings.host }}:{{ settings.port }}",
                             type="string"),
            "verify_tls": prop("Verify the server certificate (value; default true).",
                               "{{ settings.verify_tls }}"),
            "ca_file": prop("PEM file of CAs to trust (value; empty: the system's).", "{{ settings.ca_file }}"),
            "client_cert": prop("PEM client certificate (value).", "{{ settings.client_cert }}"),
            "client_key": prop("PEM client key (value).", "{{ settings.client_key }}"),
            "connect_timeout": prop("Seconds to connect.", 5, type="number", exclusiveMinimum=0),
            "read_timeout": prop("Seconds to wait for an answer.", 30, type="number", exclusiveMinimum=0),
            "total_timeout": prop("Seconds for one whole HTTP exchange (connect, send the request, status "
                                  "line, headers, body); a backend that trickles or stalls (or stops "
                                  "reading the request) is cut off here. A retry "
                                  "(see `retries`) starts only if its wait ends within this time of the "
                                  "first attempt. Default 120.",
                                  120, type="number", exclusiveMinimum=0),
            "reply_deadline": prop("Seconds every CPF reply has, from the request's arrival (RAS gives up "
                                   "on a provider that does not answer; it keeps one request in flight). "
                                   "Each HTTP exchange of a reply gets at most what is left; a wait inside "
                                   "a reply (a task, a VM reaching a state) ends here: a control is then "
                                   "accepted (RAS polls guests/get); a method with a `task` answers its "
                                   "task id, which carries the cut wait (tasks/get polls that task first, "
                                   "then the method's own); anything else, and a cut wait followed by a "
                                   "step that sends a request, answers with an error that says what goes "
                                   "on. Default 30, at most 55.",
                                   30, type="number", exclusiveMinimum=1, maximum=55),
            "max_response_bytes": prop("Largest response body accepted, in bytes (after decompression); a "
                                       "larger one is an error. Default 67108864 (64 MiB).", 67108864,
                                       type="integer", minimum=1024),
            "headers": prop("Headers sent on every request (templates).", {"Accept": "application/json"},
                            type="object", additionalProperties=REF("template")),
            "retries": prop("Attempts in all (the first included) for a request that may be sent again: "
                            "any request whose connection never opened; a request safe to repeat (GET, "
                            "HEAD, OPTIONS, the login, a step marked `idempotent`) after no answer (not "
                            "after a read timeout) or HTTP 429, 502, 503, 504; any request after a status "
                            "in `resend_writes_on`; a step with a `lookup` that found nothing. Other "
                            "statuses are answers, never retried.", 3, type="integer", minimum=1, maximum=10),
            "backoff": prop("Seconds before the first retry; doubles each time. A Retry-After header on "
                            "429 or 503 replaces it.", 0.5, type="number", minimum=0),
            "resend_writes_on": prop("Statuses the API documents as \"not applied\" (typically 429 from a "
                                     "rate limiter in front of the API): writes are sent again after them "
                                     "too (reads always are).", [429], type="array",
                                     items={"type": "integer", "minimum": 400, "maximum": 599}),
            "max_retry_wait": prop("Longest Retry-After honoured, in seconds (and it must end within "
                                   "`total_timeout` of the first attempt); when the server asks for more, "
                                   "its answer (the 429 or 503) is the reply.", 60, type="number", minimum=0),
            "error_message": prop("JMESPath over an error reply's body giving the backend's message; "
                                  "when it yields nothing (or blank text) the HTTP reason phrase is the "
                                  "message.", "message", **REF("jmespath")),
            "hosts": prop("Several addresses of one backend (value giving a list), each visible as "
                          "`host` in base_url. Requests go to the first that answers; on a connection "
                          "error the next is tried: always when the request never reached the host, "
                          "and only for requests safe to repeat (GET, or marked so) when it may have. "
                          "The host that answered stays the current one.",
                          "{{ settings.host.split(',') | map('trim') | reject('equalto', '') | list }}"),
            "refused_if": prop("JMESPath over an accepted reply's body that finds a refusal inside it "
                               "(RPC-style `{\"error\": ...}` in a 200): every step's default for its "
                               "`refused_if`.", "error", **REF("jmespath")),
            "xml_lists": prop("XML element names read as lists even when one or none is present "
                              "(see Reply bodies), e.g. EC2's `item`, AWS Query's `member`.", ["item"],
                              type="array", items={"type": "string"}),
            "params": prop("Parameters sent with every request (value giving an object): into the form "
                           "when the request has one, else into the query; a request's own parameter of "
                           "the same name wins. E.g. the API version of a Query API.",
                           {"Version": "2016-11-15"}),
            "secret_fields": prop("More field names (case-insensitive, whole names) whose values are masked "
                                  "in every recorded body and query (JSON members at any depth, form fields, "
                                  "XML elements), requests and replies alike, besides the default list: any "
                                  "name containing pass, secret, token, ticket, cookie, credential, private "
                                  "or api_key/apikey, or with key, auth, sid, csrf or session as a word, "
                                  "except the id or name of a token or key, a type or an expiry "
                                  "(README, Secrets).", ["vncproxy_port", "rootpw"], type="array",
                                  items={"type": "string", "minLength": 1}, uniqueItems=True),
            "public_fields": prop("Field names (case-insensitive, whole names) that look secret but are not, whose "
                                  "values recordings keep because a replay needs them (LXD's `auth: trusted`): "
                                  "the opposite of `secret_fields`, which wins over it for the same name; known "
                                  "secret values are masked wherever they appear all the same (README, Secrets).",
                                  ["auth"], type="array", items={"type": "string", "minLength": 1}, uniqueItems=True),
        }, required=["base_url"], example={"base_url": "https://{{ settings.host }}:8006/api2/json",
                                            "verify_tls": "{{ settings.verify_tls }}", "read_timeout": 60}),
        "auth": prop("Authentication schemes, tried in order by their `when`.",
                     [{"type": "bearer", "token": "{{ settings.token }}"}], type="array",
                     items=REF("auth_scheme"), minItems=1),
        "capabilities": obj("What provider/initialize advertises. can_suspend_guests follows from a "
                            "suspend control; template_method and can_link_clones are checked against "
                            "the methods present.", {
                                **{name: prop(f"{meaning[0].upper()}{meaning[1:]}; {low}..{high}, default "
                                              f"{default}.", default, type="integer", minimum=low, maximum=high)
                                   for name, low, high, default, meaning in contract.CAPABILITIES},
                                "template_method": prop("none, basic or versioning; highest possible if "
                                                        "absent.", "basic", enum=["none", "basic", "versioning"]),
                                "can_link_clones": prop("Advertise linked clones (needs snapshots); "
                                                        "derived if absent.", True, type="boolean"),
                                "can_suspend_guests": prop("false hides a suspend control from RAS.",
                                                           False, type="boolean"),
                            }, example={"guests_polling_rate": 15, "tasks_polling_rate": 3,
                                        "tasks_polling_retries": 100, "template_method": "versioning"}),
        "python": obj("The escape hatch, for what YAML cannot say: a Python module inside the folder of "
                      "the mapping file that declares it (a relative path; nothing outside is loaded), "
                      "loaded when the mapping loads (validate, serve and pack verify load it: an import "
                      "error is a mapping error). Its `FILTERS` dict (name -> function) provides the "
                      "template filters named here, its `FUNCTIONS` the JMESPath functions; a built-in "
                      "one cannot be replaced. `packs show` "
                      "lists it; a pack's checksums cover it. It runs with the engine's rights: install "
                      "packs you trust.", {
                          "module": prop("The module's path, relative to the mapping's folder.", "filters.py",
                                         type="string", pattern="\\.py$"),
                          "filters": prop("Template filters the module's FILTERS provides.", ["vendor_sum"],
                                          type="array", items={"type": "string",
                                                               "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
                          "auth": prop("Signing functions the module's AUTH dict provides, for auth type "
                                       "`python`.", ["vendor_hmac"], type="array",
                                       items={"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
                          "functions": prop("JMESPath functions the module's FUNCTIONS provides: name -> "
                                            "(function, [argument types]), types from string, number, "
                                            "boolean, array, object, null, any.", ["vendor_state"],
                                            type="array", items={"type": "string",
                                                                 "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
                      }, required=["module"], example={"module": "filters.py", "filters": ["vendor_sum"]}),
        "fragments": prop("Named lists of steps, inserted with `use:`.", {"resolve_node": []},
                          type="object", additionalProperties=REF("steps")),
        "methods": obj("CPF methods: name -> operation. What RAS sends with each and what the reply must hold: "
                       "docs/cpf-reference.md.", example={"guests/list": {
            "steps": [{"request": {"method": "GET", "path": "/vms"}, "extract": {"ids": "string_ids([].id)"}}],
            "result": {"guests": "{{ ids }}"}}}, properties={
            name: dict(REF("operation"), description=_method_doc(name)) for name in contract.MAPPED_METHODS
        }),
        "controls": obj("guests/control: control -> operation.", example={"start": {"steps": [
            {"request": {"method": "POST", "path": "/vms/{{ params.id }}/start"}}]}}, properties={
            name: dict(REF("operation"), description=f"{text[0].upper()}{text[1:]}. Params: id, control. "
                                                     "Reply: {} once the backend accepted it.")
            for name, text in contract.CONTROLS.items()
        }),
        "tasks": prop("Poll rules: name -> rule.", {"job": {"handle": {"job": {"pattern": "[0-9a-f]{8}"}},
                                                         "steps": [], "state": "completed"}},
                      type="object", additionalProperties=REF("poll_rule")),
        "tables": prop("Translation tables: name -> table; use in templates as "
                       "`value | translate('name')`.", {"power": {"kind": "guest_state",
                                                                   "map": {"1": "powered_on", "0": "powered_off"}}},
                       type="object", additionalProperties=REF("table")),
    },
    "$defs": DEFS,
}


def render() -> str:
    return json.dumps(SCHEMA, indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
