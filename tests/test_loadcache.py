"""The parsed mapping kept between processes (loadcache.py): used only for the very files
and engine it came from, and never trusted when it is damaged or foreign."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

from cpfmap.errors import MappingError
from cpfmap.language import loadcache, loader

TUTORIAL = Path(__file__).resolve().parent.parent / "examples" / "tutorial" / "mapping.yaml"


@pytest.fixture
def pack(tmp_path, monkeypatch):
    monkeypatch.setenv("CPFMAP_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "pack"
    folder.mkdir()
    shutil.copy(TUTORIAL, folder / "base.yaml")
    (folder / "mapping.yaml").write_text("extends: base.yaml\ncapabilities:\n  guests_polling_rate: 7\n",
                                         encoding="utf-8")
    return folder


def _rate(path: Path) -> int:
    return loader.load(path).capabilities.guests_polling_rate


def _no_parsing(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("the mapping was parsed again")
    monkeypatch.setattr(loader, "read", refuse)
    monkeypatch.setattr("cpfmap.language.templating.Templates._env", staticmethod(_counting_env(refuse)))


def _counting_env(refuse):
    real = spec_templates_env()

    def env(finalize, filters):
        made = real(finalize, filters)
        made.parse = refuse   # type: ignore[method-assign]
        return made
    return env


def spec_templates_env():
    from cpfmap.language.templating import Templates
    return Templates.__dict__["_env"].__func__


def test_an_unchanged_mapping_is_not_parsed_again(pack, monkeypatch):
    assert _rate(pack / "mapping.yaml") == 7
    _no_parsing(monkeypatch)
    assert _rate(pack / "mapping.yaml") == 7


@pytest.mark.parametrize("changed", ["mapping.yaml", "base.yaml"])
def test_a_change_to_any_file_it_came_from_is_read(pack, changed):
    assert _rate(pack / "mapping.yaml") == 7
    path = pack / changed
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("guests_polling_rate: 7", "guests_polling_rate: 9")
                    .replace("guests_polling_rate: 5", "guests_polling_rate: 6"), encoding="utf-8")
    expected = 9 if changed == "mapping.yaml" else 7
    assert _rate(pack / "mapping.yaml") == expected
    if changed == "base.yaml":   # the base's own value changed: seen through a mapping of its own
        (pack / "only.yaml").write_text("extends: base.yaml\n", encoding="utf-8")
        assert _rate(pack / "only.yaml") == 6


def test_a_broken_mapping_is_never_kept(pack):
    (pack / "mapping.yaml").write_text("extends: base.yaml\ncapabilities:\n  template_method: nope\n",
                                       encoding="utf-8")
    with pytest.raises(MappingError):
        loader.load(pack / "mapping.yaml")
    assert not list((pack.parent / "cache").glob("mapping-*"))


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps({"format": loadcache.FORMAT}),
                                     pickle.dumps([1, 2])])
def test_a_damaged_file_is_ignored_and_rebuilt(pack, content):
    assert _rate(pack / "mapping.yaml") == 7
    [kept] = (pack.parent / "cache").glob("mapping-*")
    kept.write_bytes(content)
    assert _rate(pack / "mapping.yaml") == 7
    assert loadcache.recall(kept) is not None


class _Foreign:
    """Unpickled, it would call a function of its choice (here a harmless one)."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_a_foreign_pickle_is_not_run(pack):
    assert _rate(pack / "mapping.yaml") == 7
    [kept] = (pack.parent / "cache").glob("mapping-*")
    kept.write_bytes(pickle.dumps({"format": loadcache.FORMAT, "located": _Foreign(), "names": {}, "files": []}))
    assert loadcache.recall(kept) is None
    assert _rate(pack / "mapping.yaml") == 7
