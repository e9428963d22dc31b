"""Command line: serve | validate | ... as `run(argv, stdin, stdout, stderr) -> int`.

`main()` only wires the real streams: for commands that speak CPF on stdout, the real
stdout file descriptor is kept for replies and fd 1 is pointed at stderr, so a stray print
from any library (even C code) cannot reach RAS.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable

import yaml

from cpfmap.cli import packs
from cpfmap.cli.streams import Streams
from cpfmap.clock import LogicalClock, RealClock
from cpfmap.errors import CpfmapError, InternalError, MappingError, ReplayMiss
from cpfmap.http.transport import LiveTransport, RetryPolicy, Transport
from cpfmap.http.wrappers import TracingTransport
from cpfmap.language import loader
from cpfmap.language.source import TextLoader, YamlLimit, parse_yaml, read_text
from cpfmap.protocol.rpc import PARAMS, Server, engine_handlers
from cpfmap.redact import RedactingFilter, Redactor, looks_secret
from cpfmap.runtime.engine import Engine
from cpfmap.runtime.provider import assemble
from cpfmap.version import __version__

if TYPE_CHECKING:   # the modules only some commands use are imported by them: serve starts sooner
    from cpfmap.recording.cassette import RecordingTransport

CPF_COMMANDS = ("serve", "record", "dry-run")
log = logging.getLogger("cpfmap")


MAPPING_HELP = "mapping file, pack folder or pack name"
PARAM_HELP = "a param of the CPF request, repeatable: --param id=101 (booleans: true/false)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cpfmap", description="Declarative connector engine for the Parallels "
                                                           "RAS Custom Provider Framework.")
    p.add_argument("--version", action="version", version=f"cpfmap {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="speak CPF on stdin/stdout (what RAS launches)")
    serve.add_argument("mapping", help="mapping file, pack folder or pack name")
    serve.add_argument("--replay", metavar="CASSETTE", help="answer from a recording instead of the backend")
    _logging_options(serve)
    record = sub.add_parser("record", help="serve CPF against the live backend, recording every HTTP exchange")
    record.add_argument("mapping", help="mapping file, pack folder or pack name")
    record.add_argument("--cassette", required=True, help="cassette file to write (VCR.py format, scrubbed)")
    record.add_argument("--session", help="also write each CPF request with its reply (scrubbed) to this JSON-lines "
                                          "file; dry-run --session compares its replay with these replies")
    _logging_options(record)
    dry = sub.add_parser("dry-run", help="run a CPF session against a recording, no network")
    dry.add_argument("mapping", help="mapping file, pack folder or pack name")
    dry.add_argument("--cassette", required=True, help="recording: VCR.py cassette or hand-written responses")
    dry.add_argument("--session", help="JSON-lines file of CPF requests (or of requests with the replies a "
                                       "record --session kept: each replayed reply is compared); prints a transcript")
    dry.add_argument("--format", choices=("text", "json"), default="text", help="transcript format")
    _logging_options(dry, "WARNING")
    conf = sub.add_parser("conformance", help="run RAS's workflows and protocol probes against a provider",
                          description="conformance [options] MAPPING [--replay FILE]  |  "
                                      "conformance [options] -- COMMAND [ARGS...]")
    conf.add_argument("target", nargs="*", help="a mapping (run with this engine), or after -- any provider command")
    conf.add_argument("--replay", metavar="CASSETTE", help="with a mapping: serve it from a recording")
    conf.add_argument("--settings", help="JSON or YAML file of the settings sent in provider/connect")
    conf.add_argument("--guest", help="guest for the power workflow")
    conf.add_argument("--template-source", help="guest to turn into a template (create-template)")
    conf.add_argument("--template", help="existing template for create-host and maintenance")
    conf.add_argument("--host", help="existing host for delete-host")
    conf.add_argument("--clone-name", default="CPF-CONFORMANCE-01", help="name of the host create-host makes")
    conf.add_argument("--version", type=int, default=1, dest="template_version", help="template version n")
    conf.add_argument("--workflows", help="comma-separated: connect,inventory,power,create-template,"
                                          "create-host,maintenance,delete-host,protocol")
    conf.add_argument("--time-scale", type=float, default=1.0, help="multiply RAS's polling intervals by this")
    conf.add_argument("--reply-timeout", type=float, default=60.0, help="seconds to wait for each reply")
    conf.add_argument("--junit", help="also write JUnit XML here")
    conf.add_argument("--keep", action="store_true",
                      help="leave what the workflows made (template, clone, snapshots) instead of putting it back")
    conf.add_argument("-v", "--verbose", action="store_true",
                      help="print each CPF exchange and, under it, the provider's log for it (with a mapping: "
                           "every HTTP request it caused)")
    explain = sub.add_parser("explain", help="show the HTTP requests a method would send, without sending")
    explain.add_argument("mapping", help=MAPPING_HELP)
    explain.add_argument("method", help="CPF method, e.g. guests/get or guests/control")
    explain.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    explain.add_argument("--settings", help="JSON or YAML settings file (missing ones are shown as <name>)")
    explain.add_argument("--replay", metavar="CASSETTE", help="run it against a recording and show every exchange")
    call = sub.add_parser("call", help="connect, run one CPF method, print the reply")
    call.add_argument("mapping", help=MAPPING_HELP)
    call.add_argument("method", help="CPF method, e.g. guests/list, guests/get or provider/connect")
    call.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    call.add_argument("--settings", required=True, help="JSON or YAML settings file")
    call.add_argument("--replay", metavar="CASSETTE", help="answer from a recording instead of the backend")
    call.add_argument("-v", "--verbose", action="store_true", help="print each HTTP exchange with its timing")
    new = sub.add_parser("new-pack", help="scaffold a pack folder NAME/ with a mapping skeleton and README")
    new.add_argument("name", help="pack name: lower-case letters, digits and dashes")
    new.add_argument("--dir", type=Path, default=Path("."), help="folder to create the pack in (default: the current folder)")
    new.add_argument("--project", action="store_true", help="a pip-installable pack project (see `cpfmap bundle`, README)")
    docs = sub.add_parser("docs", help="the settings table of a pack README, generated from the mapping")
    docs.add_argument("mapping", help=MAPPING_HELP)
    docs.add_argument("--readme", type=Path, help="rewrite the table between the settings markers of this README")
    docs.add_argument("--check", action="store_true", help="with --readme: only check; exit 1 if the table is stale")
    validate = sub.add_parser("validate", help="check mappings: YAML, schema, templates, expressions, levels")
    validate.add_argument("mappings", nargs="+", help="mapping files, pack folders or pack names")
    validate.add_argument("--format", choices=("text", "json"), default="text",
                          help="text: file:line:column: severity: message; json: the findings per mapping")
    packs.add_commands(sub)
    return p


def _logging_options(p: argparse.ArgumentParser, level: str = "INFO") -> None:
    p.add_argument("--log-file", help="also append the log to this file")
    p.add_argument("--log-level", default=level, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help=f"least severe message to log (default {level}); the log goes to stderr and --log-file")


def setup_logging(args: argparse.Namespace, stderr: IO[str], redactor: Redactor) -> None:
    log.handlers.clear()
    log.propagate = False
    log.setLevel(getattr(args, "log_level", "INFO"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(stderr)]
    problem = None
    if getattr(args, "log_file", None):
        try:
            handlers.append(_file_handler(Path(args.log_file)))
        except OSError as exc:
            problem = f"cannot write the log file {args.log_file} ({exc.strerror or exc}); logging to stderr only"
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RedactingFilter(redactor))
        log.addHandler(handler)
    if problem:
        log.error("%s", problem)


def _file_handler(path: Path) -> logging.Handler:
    """A log file, its folder created if missing (RAS would otherwise get no reply at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return logging.FileHandler(path, encoding="utf-8")


def run(argv: list[str], stdin: IO[bytes], stdout: IO[bytes], stderr: IO[str],
        transport: Transport | None = None, clock=None) -> int:
    streams = Streams(stdin, stdout, stderr)
    try:
        args = _parse_args(argv, streams)
    except SystemExit as exc:
        return int(exc.code or 0)
    args.command_mode = "--" in argv
    command: Callable = COMMANDS[args.command]
    with contextlib.redirect_stdout(stderr):
        try:
            return command(args, streams, transport=transport, clock=clock)
        except MappingError as exc:
            stderr.write(f"cpfmap: {exc.report()}\n")
        except CpfmapError as exc:
            stderr.write(f"cpfmap: {exc.message}\n")
        except BrokenPipeError:
            stderr.write("cpfmap: the reader of stdout went away; stopping\n")
            return 0
        except OSError as exc:
            stderr.write(f"cpfmap: {exc}\n")
        return 2


def _parse_args(argv: list[str], streams: Streams) -> argparse.Namespace:
    """argparse on the injected streams: --help and --version on stdout (main() may have pointed
    sys.stdout at stderr to protect the reply stream), usage errors on stderr."""
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(streams.stderr):
            return parser().parse_args(argv)
    finally:
        if shown.getvalue():
            streams.out(shown.getvalue())


def cmd_serve(args: argparse.Namespace, streams: Streams, transport: Transport | None = None, clock=None) -> int:
    redactor = Redactor()
    setup_logging(args, streams.stderr, redactor)
    mapping = _load_or_report(args.mapping, streams)
    if isinstance(mapping, Server):
        return mapping.serve(streams.stdin, streams.stdout)
    live = transport is None and not getattr(args, "replay", None) and not getattr(args, "cassette", None)
    try:
        transport, clock, recording = _serve_transport(args, mapping, redactor, transport, clock)
        session_log = _session_log(args) if recording is not None else None
    except CpfmapError as exc:
        return _broken(exc, streams)
    if log.isEnabledFor(logging.DEBUG):
        from cpfmap.http import wrappers
        from cpfmap.recording import transcript
        transport = wrappers.LoggedTransport(transport, clock.now)
    engine, server = assemble(mapping, transport, clock, redactor, live=live)
    log.info("cpfmap %s serving mapping %s (%s)", __version__, mapping.name, mapping.files[0])
    try:
        if recording is not None and session_log is not None:
            from cpfmap.http import wrappers
            from cpfmap.recording import transcript
            with session_log as out:
                public = tuple(s.name for s in mapping.settings if not s.secret)
                recorder = transcript.RecordingServer(server, out, recording.exchanges, mapping.secret_settings(),
                                                      public)
                return recorder.serve(streams.stdin, streams.stdout)
        return server.serve(streams.stdin, streams.stdout)
    finally:
        with contextlib.suppress(Exception):
            engine.disconnect({})
        transport.close()


def _serve_transport(args: argparse.Namespace, mapping, redactor: Redactor, transport: Transport | None,
                     clock) -> tuple[Transport, object, RecordingTransport | None]:
    """The transport serve answers through: a replay, the live backend, maybe recorded (the
    recorder is returned too). A cassette that cannot be read or written is a CpfmapError,
    raised before any request."""
    if getattr(args, "replay", None):
        from cpfmap.recording import cassette
        transport, clock = cassette.ReplayTransport(cassette.load(args.replay)), clock or LogicalClock()
    elif getattr(args, "cassette", None):  # cache decisions on logical time: the recording replays the same
        clock = clock or LogicalClock(RealClock().sleep)
    transport = transport or LiveTransport(RetryPolicy.of(mapping.connection), RealClock())
    recording = None
    if getattr(args, "cassette", None):
        from cpfmap.recording.cassette import RecordingTransport
        recording = RecordingTransport(transport, args.cassette, redactor, mapping.connection.secret_fields,
                                       mapping.connection.public_fields)
    return recording or transport, clock or RealClock(), recording


def _session_log(args: argparse.Namespace) -> IO[str] | None:
    from cpfmap.recording import transcript
    if not getattr(args, "session", None):
        return None
    try:
        return transcript.open_session_log(args.session)
    except OSError as exc:
        raise CpfmapError(f"cannot write the session file {args.session}: {exc.strerror or exc}") from None


def _load_or_report(target: str, streams: Streams):
    """The mapping; or, when it is broken, a Server that answers every request with why."""
    try:
        return loader.load(target)
    except MappingError as exc:
        streams.stderr.write(f"cpfmap: the mapping cannot be loaded:\n{exc.report()}\n")
        streams.stderr.flush()
        broken = MappingError(exc.findings)
        broken.message = f"mapping failed to load: {exc.message}"
        return Server(dict.fromkeys(PARAMS, _never), Redactor(), broken)
    except Exception as exc:  # noqa: BLE001 - a defect in loading must still leave RAS with replies
        log.exception("internal error loading the mapping")
        defect = InternalError(f"internal error loading the mapping: {type(exc).__name__}: {exc}")
        return Server(dict.fromkeys(PARAMS, _never), Redactor(), defect)


def _broken(error: CpfmapError, streams: Streams) -> int:
    """Serve every request with this error: RAS gets a reason, never a provider that died."""
    log.error("cannot serve: %s", error.message)
    return Server(dict.fromkeys(PARAMS, _never), Redactor(), error).serve(streams.stdin, streams.stdout)


def cmd_dry_run(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    from cpfmap.recording import cassette, transcript
    from cpfmap.recording.cassette import ReplayTransport
    if not args.session:
        args.replay = args.cassette
        args.cassette = None
        return cmd_serve(args, streams)
    redactor = Redactor()
    setup_logging(args, streams.stderr, redactor)
    mapping = loader.load(args.mapping)
    clock = LogicalClock()
    recording = cassette.load(args.cassette)
    replay = TracingTransport(ReplayTransport(recording), clock.now)
    server = Server(engine_handlers(Engine(mapping, replay, clock, redactor)), redactor)
    entries = []
    for line in read_text(Path(args.session), "session file").split("\n"):
        if not line.strip():
            continue
        line, recorded, live_http = transcript.session_line(line)
        before, answered = len(replay.exchanges), len(recording.answered)
        reply = server.handle_text(line)
        done = replay.exchanges[before:]
        http = [transcript.http_entry(x.request, x.response, redactor) for x in done]
        miss = any(isinstance(x.error, ReplayMiss) for x in done) and "error" in reply
        entry = transcript.Entry(_request_of(line, redactor), reply, http, miss, recorded)
        transcript.compare(entry, live_http, recording.answered[answered:], recording)
        entries.append(entry)
    notes = transcript.notes(entries, recording, transcript.caches(mapping))
    render = transcript.render_json if args.format == "json" else transcript.render_text
    streams.out(render(entries, notes))
    return 1 if any(e.miss or e.differs for e in entries) else 0


def _request_of(line: str, redactor: Redactor):
    try:
        return redactor.scrub(json.loads(line))
    except (ValueError, RecursionError):
        return redactor(line)


def _never(params: dict) -> None:
    raise AssertionError("unreachable: a broken mapping answers every request with its error")


def cmd_validate(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    results = {}
    for target in args.mappings:
        results[target] = loader.check(target)
    errors = sum(1 for fs in results.values() for f in fs if f.severity == "error")
    if args.format == "json":
        streams.out(json.dumps({t: [f.as_dict() for f in fs] for t, fs in results.items()}, indent=2) + "\n")
        return 1 if errors else 0
    for target, findings in results.items():
        for finding in findings:
            streams.out(finding.format() + "\n")
        bad = sum(1 for f in findings if f.severity == "error")
        streams.out(f"{target}: {'FAILED' if bad else 'ok'} ({bad} errors, {len(findings) - bad} warnings)\n")
    return 1 if errors else 0


def cmd_conformance(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    from cpfmap.conformance import report, runner
    from cpfmap.conformance.ras import Options
    if not args.target:
        streams.stderr.write("cpfmap conformance: give a mapping, or -- and a provider command\n")
        return 2
    if args.command_mode:
        argv = list(args.target)
    else:
        argv = [sys.executable, "-m", "cpfmap", "serve", args.target[0], "--log-level",
                "DEBUG" if args.verbose else "WARNING"]
        argv += ["--replay", args.replay] if args.replay else []
    settings = _settings_file(args.settings)
    redactor = _settings_redactor(settings, None if args.command_mode else args.target[0])
    options = Options(settings=settings, guest=args.guest,
                      template_source=args.template_source, template=args.template, host=args.host, clone_name=args.clone_name,
                      version=args.template_version, time_scale=args.time_scale,
                      trace=(lambda line: streams.out(redactor(line) + "\n")) if args.verbose else None)
    workflows = [w.strip() for w in args.workflows.split(",")] if args.workflows else None

    def progress(line: str) -> None:
        streams.stderr.write(redactor(line) + "\n")
        streams.stderr.flush()
    checks = report.scrubbed(runner.run(argv, options, workflows, args.reply_timeout, progress=progress,
                                        keep=args.keep), redactor)
    streams.out(report.table(checks))
    if args.junit:
        report.junit(checks, args.junit)
    return 0 if report.verdict(checks) else 1


def _settings_redactor(settings: dict, mapping: str | None) -> Redactor:
    """Masks the settings the mapping marks secret, and any setting named like a secret."""
    secret: set = set()
    if mapping:
        with contextlib.suppress(CpfmapError):
            secret = set(loader.load(mapping).secret_settings())
    redactor = Redactor()
    for name, value in settings.items():
        if name in secret or looks_secret(name):
            redactor.add(value)
    return redactor


def _settings_file(path: str | None) -> dict:
    if not path:
        return {}
    try:
        data = parse_yaml(read_text(Path(path), "settings file"), TextLoader)
    except YamlLimit as exc:
        raise CpfmapError(f"{path}: settings file refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise CpfmapError(f"{path}: settings file is not JSON or YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CpfmapError(f"{path}: settings must be key: value pairs")
    # RAS sends every setting as a string.
    return {str(k): ("true" if v is True else "false" if v is False else "" if v is None else str(v))
            for k, v in data.items()}


def cmd_explain(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    from cpfmap.authoring import explain
    if args.replay:
        args.verbose = True
        return _call(args, streams, verbose_only=True)
    mapping = loader.load(args.mapping)
    params = explain.parse_params(args.method, args.param)
    for line in explain.explain(mapping, args.method, params, _settings_file(args.settings)):
        streams.out(line + "\n")
    return 0


def cmd_call(args: argparse.Namespace, streams: Streams, transport: Transport | None = None, **_: object) -> int:
    return _call(args, streams, transport)


def _call(args: argparse.Namespace, streams: Streams, transport: Transport | None = None,
          verbose_only: bool = False) -> int:
    from cpfmap.authoring import call, explain
    from cpfmap.recording import cassette
    from cpfmap.recording.cassette import ReplayTransport
    mapping = loader.load(args.mapping)
    params = explain.parse_params(args.method, args.param)
    if args.replay:
        transport = ReplayTransport(cassette.load(args.replay))
    transport = transport or LiveTransport(RetryPolicy.of(mapping.connection))
    try:
        connected, reply, exchanges, redactor = call.call(
            mapping, args.method, params, _settings_file(args.settings), transport, bool(args.replay))
    finally:
        transport.close()
    if args.verbose:
        for exchange in exchanges:
            streams.out(call.show_exchange(exchange, redactor) + "\n")
    if not verbose_only or "error" in reply:
        streams.out(json.dumps(reply, indent=2) + "\n")
    return 0 if "result" in reply else 1


def cmd_new_pack(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    from cpfmap.authoring import scaffold
    if args.project:
        return packs.cmd_new_project(args, streams)
    folder = scaffold.new_pack(args.name, args.dir)
    streams.out(f"created {folder}\nnext: edit {folder / 'mapping.yaml'}, then "
                f"cpfmap validate {folder}\n")
    return 0


def cmd_docs(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    from cpfmap.authoring import reference, scaffold
    if args.readme is None:
        streams.out(reference.settings_table(loader.load(args.mapping)))
        return 0
    fresh = scaffold.write_settings_table(loader.resolve(args.mapping), args.readme, check=args.check)
    if args.check and not fresh:
        streams.stderr.write(f"cpfmap docs: the settings table in {args.readme} is stale: "
                             f"run cpfmap docs {args.mapping} --readme {args.readme}\n")
        return 1
    streams.out(f"{args.readme}: settings table {'up to date' if args.check else 'written'}\n")
    return 0


COMMANDS: dict[str, Callable] = {"serve": cmd_serve, "record": cmd_serve, "dry-run": cmd_dry_run,
                                 "validate": cmd_validate, "conformance": cmd_conformance, "explain": cmd_explain,
                                 "call": cmd_call, "new-pack": cmd_new_pack, "docs": cmd_docs, **packs.COMMANDS}


def _protected_stdout() -> IO[bytes]:
    """Keep the real stdout for replies; send everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    reply_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(reply_fd, "wb", buffering=0)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    stderr = io.TextIOWrapper(sys.stderr.buffer, encoding="utf-8", errors="replace", line_buffering=True) \
        if hasattr(sys.stderr, "buffer") else sys.stderr
    speaks_cpf = bool(argv) and argv[0] in CPF_COMMANDS
    stdout = _protected_stdout() if speaks_cpf else sys.stdout.buffer
    try:
        sys.exit(run(argv, sys.stdin.buffer, stdout, stderr))
    except KeyboardInterrupt:
        sys.exit(130)
