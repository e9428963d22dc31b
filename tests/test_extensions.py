"""The escape hatch (cpfmap/language/extensions.py): a pack's Python filters, declared by its
mapping, loaded only from its folder, reported at load time, listed and covered like its files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from cpfmap.errors import MappingError
from cpfmap.language import loader

TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text(encoding="utf-8"))
MODULE = '''
import zlib

def vendor_sum(value):
    """A vendor's checksum header: CRC-32 of the text, 8 hex digits."""
    return format(zlib.crc32(str(value).encode("utf-8")), "08x")

FILTERS = {"vendor_sum": vendor_sum}
'''


def pack(tmp_path: Path, python: dict | None, module: str = MODULE, name: str = "ext.py") -> Path:
    folder = tmp_path / "pack"
    (folder / Path(name).parent).mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(module, encoding="utf-8")
    data = json.loads(json.dumps(TINY))
    if python is not None:
        data["python"] = python
    data["connection"]["headers"] = {"X-Sum": "{{ settings.user | vendor_sum }}"}
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    return [f.format() for f in loader.check(path) if f.severity == "error"]


def test_a_declared_filter_is_used_by_templates(tmp_path):
    mapping = loader.load(pack(tmp_path, {"module": "ext.py", "filters": ["vendor_sum"]}))
    assert mapping.python.filters["vendor_sum"]("ras") == "%08x" % __import__("zlib").crc32(b"ras")
    header = dict(mapping.connection.headers)["X-Sum"]
    assert header.render({"settings": {"user": "ras"}}) == mapping.python.filters["vendor_sum"]("ras")


def test_without_the_declaration_the_filter_is_unknown(tmp_path):
    assert any("vendor_sum" in e for e in errors(pack(tmp_path, None)))


@pytest.mark.parametrize("module, message", [
    ("../ext.py", "must be a relative path inside"),
    ("/etc/ext.py", "must be a relative path inside"),
    ("C:\\\\pack\\\\ext.py", "must be a relative path inside"),
    ("missing.py", "no such .py file"),
])
def test_only_a_module_inside_the_folder_is_loaded(tmp_path, module, message):
    found = errors(pack(tmp_path, {"module": module, "filters": ["vendor_sum"]}))
    assert any(message in e and "python" in e for e in found), found


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text(MODULE, encoding="utf-8")
    path = pack(tmp_path, {"module": "link.py", "filters": ["vendor_sum"]})
    try:
        (path.parent / "link.py").symlink_to(outside)
    except OSError:
        pytest.skip("no symlinks here")
    assert any("leads outside" in e for e in errors(path))


def test_windows_separators_name_a_module_in_a_subfolder(tmp_path):
    path = pack(tmp_path, {"module": "lib\\ext.py", "filters": ["vendor_sum"]}, name="lib/ext.py")
    assert errors(path) == []


@pytest.mark.parametrize("module, filters, message", [
    ("raise RuntimeError('boom')", ["vendor_sum"], "failed to load: RuntimeError: boom"),
    ("FILTERS = {}", ["vendor_sum"], "provides no filter `vendor_sum`"),
    ("x = 1", ["vendor_sum"], "has no FILTERS dict"),
    ("FILTERS = {'lower': str.upper}", ["lower"], "is built in"),
])
def test_a_broken_module_is_a_mapping_error_not_a_traceback(tmp_path, module, filters, message):
    path = pack(tmp_path, {"module": "ext.py", "filters": filters}, module=module)
    found = errors(path)
    assert any(message in e for e in found), found
    with pytest.raises(MappingError):
        loader.load(path)


def test_validate_reports_it_with_the_mapping_line(tmp_path):
    path = pack(tmp_path, {"module": "ext.py", "filters": ["vendor_sum"]}, module="import nosuchmodule_xyz")
    proc = subprocess.run([sys.executable, "-m", "cpfmap", "validate", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_packs_show_lists_the_module_and_pack_verify_covers_it(tmp_path):
    path = pack(tmp_path, {"module": "ext.py", "filters": ["vendor_sum"]})
    folder = path.parent
    (folder / "pack.yaml").write_text(
        "pack: 1\nname: extdemo\nversion: 1.0.0\ndescription: d\nengine: '>=0.1'\nlicense: MIT\n"
        "maintainer: {name: me}\nbackend: {product: tiny, tested: [tests]}\nprovenance: [{kind: documentation, source: tests}]\n"
        "variants:\n  default: {mapping: mapping.yaml, level: basic}\n", encoding="utf-8")
    run = lambda *argv: subprocess.run([sys.executable, "-m", "cpfmap", *argv], capture_output=True, text=True,  # noqa: E731
                                       timeout=120, cwd=ROOT)
    shown = run("packs", "show", str(folder))
    assert "# python (default): ext.py sha256 " in shown.stdout and "filters: vendor_sum" in shown.stdout, shown
    assert run("pack", "checksums", str(folder)).returncode == 0
    (folder / "ext.py").write_text(MODULE + "\n# changed\n", encoding="utf-8")
    verified = run("pack", "verify", str(folder))
    assert verified.returncode != 0 and "ext.py" in verified.stdout, verified.stdout
    assert "checksum" in verified.stdout.lower(), verified.stdout


FUNCTIONS_MODULE = MODULE + '''
def vendor_state(code):
    """A vendor's numeric power code as text."""
    return {1: "on", 0: "off"}.get(int(code), "unknown")

FUNCTIONS = {"vendor_state": (vendor_state, ["number"])}
'''


def test_a_declared_jmespath_function_is_used_by_extractions(tmp_path):
    path = pack(tmp_path, {"module": "ext.py", "filters": ["vendor_sum"], "functions": ["vendor_state"]},
                module=FUNCTIONS_MODULE)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["methods"]["guests/get"]["steps"].append({"set": {"power": {"jmespath": "vendor_state(vm.power)"}}})
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    mapping = loader.load(path)
    step = mapping.methods["guests/get"].steps[-1]
    assert dict(step.set)["power"].eval({"vm": {"power": 1}}) == "on"


@pytest.mark.parametrize("functions, module, message", [
    (["vendor_state"], MODULE, "has no FUNCTIONS dict"),
    (["lower"], "FUNCTIONS = {'lower': (str.upper, ['string'])}", "is built in"),
    (["f"], "FUNCTIONS = {'f': (len, ['text'])}", "must be (function, [argument types])"),
])
def test_a_bad_function_declaration_is_a_mapping_error(tmp_path, functions, module, message):
    path = pack(tmp_path, {"module": "ext.py", "functions": functions}, module=module + "\nFILTERS = {}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    del data["connection"]["headers"]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert any(message in e for e in errors(path)), errors(path)


def test_an_unknown_jmespath_function_is_found_at_load_time(tmp_path):
    path = pack(tmp_path, {"module": "ext.py", "filters": ["vendor_sum"]})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["methods"]["guests/get"]["steps"].append({"set": {"power": {"jmespath": "vendor_stat(vm.power)"}}})
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert any("no JMESPath function `vendor_stat`" in e for e in errors(path)), errors(path)


SIGNER_MODULE = MODULE + '''
import hashlib, hmac

def vendor_hmac(request, settings):
    """HMAC-SHA256 over method, URL and body with the password; a header."""
    text = request["method"] + " " + request["url"] + " " + (request["body"] or b"").decode()
    return {"X-Signature": hmac.new(settings["password"].encode(), text.encode(), hashlib.sha256).hexdigest()}

def broken(request, settings):
    raise KeyError("no-such-setting")

AUTH = {"vendor_hmac": vendor_hmac, "broken": broken}
'''


def signed_pack(tmp_path, sign: str) -> Path:
    path = pack(tmp_path, {"module": "ext.py", "filters": ["vendor_sum"], "auth": ["vendor_hmac", "broken"]},
                module=SIGNER_MODULE)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["auth"] = [{"type": "python", "sign": sign}]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_a_packs_signing_function_signs_every_request_and_its_headers_are_secrets(tmp_path):
    import hashlib
    import hmac

    from cpfmap.clock import VirtualClock
    from cpfmap.http.transport import FunctionTransport, HttpResponse
    from cpfmap.runtime.provider import Provider
    sent = []

    def answer(request):
        sent.append(request)
        return HttpResponse(200, (("Content-Type", "application/json"),), b'{"user": "admin"}')
    provider = Provider(loader.load(signed_pack(tmp_path, "vendor_hmac")), FunctionTransport(answer), clock=VirtualClock())
    settings = {"url": "https://hv.example.test", "user": "admin", "password": "pw-123456"}
    reply = provider.call("provider/connect", {"settings": settings})
    assert reply == {"result": {}}, reply
    request = sent[0]
    expected = hmac.new(b"pw-123456", f"{request.method} {request.url} ".encode(), hashlib.sha256).hexdigest()
    assert request.header("X-Signature") == expected
    assert expected not in provider.redactor(f"sig {expected}")


def test_a_signing_function_that_fails_is_an_error_reply(tmp_path):
    from cpfmap.clock import VirtualClock
    from cpfmap.http.transport import FunctionTransport, HttpResponse
    from cpfmap.runtime.provider import Provider
    provider = Provider(loader.load(signed_pack(tmp_path, "broken")),
                        FunctionTransport(lambda r: HttpResponse(200, (), b"{}")), clock=VirtualClock())
    reply = provider.call("provider/connect", {"settings": {"url": "https://h", "user": "a", "password": "pw-123456"}})
    assert "the pack's signing function failed: KeyError" in reply["error"]["message"], reply


def test_an_undeclared_signing_function_is_a_mapping_error(tmp_path):
    assert any("no signing function `nope`" in e for e in errors(signed_pack(tmp_path, "nope")))


def test_a_module_may_define_dataclasses(tmp_path):
    module = "from dataclasses import dataclass\n\n@dataclass\nclass Pair:\n    a: int\n\n" \
             "FILTERS = {'pair_first': lambda v: Pair(v).a}\n"
    path = pack(tmp_path, {"module": "ext.py", "filters": ["pair_first"]}, module=module)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["connection"]["headers"] = {"X-First": "{{ settings.user | pair_first }}"}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert errors(path) == []
