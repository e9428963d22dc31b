"""Settings are checked the same way by every command (serve, call, explain): a setting that
builds the backend URL must fit its place there, a secret must be long enough to be masked."""
from __future__ import annotations

import io

import pytest

from cpfmap.cli.commands import run
from cpfmap.clock import VirtualClock
from cpfmap.errors import ConfigError
from cpfmap.http.transport import FunctionTransport
from cpfmap.language import loader
from cpfmap.runtime.engine import Engine

PVE = {"host": "pve.example", "username": "root@pam", "password": "a-long-password"}
TINY = {"user": "admin", "password": "pw-very-secret"}

BAD_URL_SETTINGS = [  # (mapping, settings, the setting the message names)
    ("proxmox-ve", {"host": "evil.example/x"}, "host"),
    ("proxmox-ve", {"host": "evil.example#"}, "host"),
    ("proxmox-ve", {"host": "evil.example?a=b"}, "host"),
    ("proxmox-ve", {"host": "user@evil.example"}, "host"),
    ("proxmox-ve", {"host": "pve.example\r\nX-Evil: 1"}, "host"),
    ("proxmox-ve", {"host": "good.example, evil.example/x"}, "host"),
    ("tests/data/tiny.yaml", {"url": "https://hv.test/api#"}, "url"),
    ("tests/data/tiny.yaml", {"url": "https://me@hv.test"}, "url"),
    ("tests/data/tiny.yaml", {"url": "ftp://hv.test"}, "url"),
    ("tests/data/tiny.yaml", {"url": "https://hv.test:abc"}, "url"),
    ("tests/data/tiny.yaml", {"url": "https://hv.test\n"}, "url"),
    ("openstack", {"auth_url": "https://keystone.test/v3?x=1"}, "auth_url"),
]


def _connect(mapping: str, settings: dict):
    sent = []
    engine = Engine(loader.load(mapping), FunctionTransport(lambda request: sent.append(request)), VirtualClock())
    base = PVE if mapping == "proxmox-ve" else TINY if "tiny" in mapping else {}
    with pytest.raises(ConfigError) as raised:
        engine.connect({"settings": {**base, **settings}})
    return raised.value, sent


@pytest.mark.parametrize(("mapping", "settings", "name"), BAD_URL_SETTINGS)
def test_a_setting_that_would_move_the_api_root_is_refused_by_name(mapping, settings, name):
    error, sent = _connect(mapping, settings)
    assert f"setting `{name}`" in error.message and error.code == 1
    assert not sent


@pytest.mark.parametrize(("mapping", "settings"), [("proxmox-ve", {"host": "10.0.0.5"}),
                                                   ("proxmox-ve", {"host": "[fe80::1]"}),
                                                   ("proxmox-ve", {"host": "a.example, b.example"}),
                                                   ("tests/data/tiny.yaml", {"url": "https://hv.test:8443/base"}),
                                                   ("openstack", {"auth_url": "https://keystone.test:5000/v3"})])
def test_ordinary_urls_and_hosts_pass(mapping, settings):
    from cpfmap.language import urlsettings
    mapping = loader.load(mapping)
    base = PVE if mapping.name.startswith("proxmox") else TINY
    coerced = mapping.coerce_settings({**base, **settings}) if mapping.name != "openstack" else \
        {s.name: s.default for s in mapping.settings} | settings
    urlsettings.check(mapping.connection, coerced)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = run(list(argv), io.BytesIO(), out, err)
    return code, out.getvalue().decode(), err.getvalue()


@pytest.mark.parametrize("command", ["explain", "call"])
@pytest.mark.parametrize(("extra", "name"), [({"port": "abc"}, "port"), ({"host": "evil.example/x"}, "host"),
                                             ({"password": "abc"}, "password")])
def test_explain_and_call_refuse_the_same_settings(tmp_path, command, extra, name):
    path = tmp_path / "settings.yaml"
    path.write_text("\n".join(f"{k}: '{v}'" for k, v in {**PVE, **extra}.items()))
    code, out, err = _cli(command, "proxmox-ve", "guests/list", "--settings", str(path))
    assert code != 0 and f"setting `{name}`" in out + err and "Traceback" not in out + err, (out, err)
    assert "None" not in out


def test_a_secret_shorter_than_four_characters_is_refused_at_connect():
    error, sent = _connect("proxmox-ve", {"password": "abc"})
    assert "shorter than 4" in error.message and "abc" not in error.message and not sent
