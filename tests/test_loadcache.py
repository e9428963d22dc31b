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


# ------------------------------------------------ who may have written the cache

def _plant(entry: Path, rate: int) -> None:
    """Rewrite a kept entry as someone else would: the same key, another polling rate."""
    kept = pickle.loads(entry.read_bytes())
    kept["located"].data["capabilities"]["guests_polling_rate"] = rate
    entry.write_bytes(pickle.dumps(kept))


@pytest.fixture
def logged(monkeypatch) -> list:
    """What the cache logs (the cpfmap logger may not propagate: a CLI test set it up)."""
    said: list = []
    monkeypatch.setattr(loadcache.log, "warning", lambda text, *args: said.append(text % args))
    return said


def _entry(pack: Path) -> Path:
    assert _rate(pack / "mapping.yaml") == 7
    [kept] = (pack.parent / "cache").glob("mapping-*")
    return kept


def test_a_planted_entry_in_an_owner_only_cache_is_what_a_hit_serves(pack):
    """The control for the tests below: the planting itself works when the cache is trusted."""
    entry = _entry(pack)
    _plant(entry, 99)
    assert _rate(pack / "mapping.yaml") == 99


@pytest.mark.parametrize("opened", ["folder", "file"])
def test_an_entry_others_can_write_is_ignored(pack, opened, logged):
    entry = _entry(pack)
    _plant(entry, 99)
    (entry.parent if opened == "folder" else entry).chmod(0o777 if opened == "folder" else 0o666)
    assert _rate(pack / "mapping.yaml") == 7
    assert "others can write it" in " ".join(logged)


def test_an_entry_owned_by_another_user_is_ignored(pack, monkeypatch, logged):
    entry = _entry(pack)
    _plant(entry, 99)
    monkeypatch.setattr(loadcache.os, "getuid", lambda: os.stat(entry).st_uid + 1)
    assert _rate(pack / "mapping.yaml") == 7
    assert "belongs to user id" in " ".join(logged)


def test_the_schema_check_marker_of_an_untrusted_folder_is_not_used(pack):
    (pack.parent / "cache").mkdir(mode=0o700)
    located = loader.read(pack / "mapping.yaml")
    assert loader._checked_marker(located) is not None
    (pack.parent / "cache").chmod(0o777)
    assert loader._checked_marker(located) is None


def _load_within(path: Path, seconds: float = 20) -> int:
    import threading
    out = []
    worker = threading.Thread(target=lambda: out.append(_rate(path)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, "loading the mapping hung on the cache entry"
    return out[0]


@pytest.mark.parametrize("kind", ["fifo", "link out", "device"])
def test_an_entry_that_is_not_a_regular_file_is_never_opened(pack, kind, tmp_path):
    entry = _entry(pack)
    outside = tmp_path / "elsewhere.pickle"
    entry.rename(outside)
    _plant(outside, 99)
    if kind == "fifo":
        os.mkfifo(entry)
    elif kind == "device":
        entry.symlink_to("/dev/zero")
    else:   # a planted entry elsewhere
        entry.symlink_to(outside)
    assert _load_within(pack / "mapping.yaml") == 7


def test_an_entry_is_read_with_a_bound(pack, monkeypatch):
    entry = _entry(pack)
    monkeypatch.setattr(loadcache, "MAX_ENTRY_BYTES", entry.stat().st_size - 1)
    assert loadcache.read_entry(entry) is None


def test_an_upgrade_of_a_library_that_reads_mappings_misses_the_cache(pack, monkeypatch):
    entry = _entry(pack)
    real = loadcache.importlib.metadata.version
    monkeypatch.setattr(loadcache.importlib.metadata, "version",
                        lambda name: "999" if name == "Jinja2" else real(name))
    loadcache.engine_digest.cache_clear()
    try:
        assert loadcache.key(pack / "mapping.yaml") != entry
    finally:
        loadcache.engine_digest.cache_clear()


def test_a_hit_needs_the_exact_bytes_of_every_file_not_only_its_text(pack):
    entry = _entry(pack)
    base = pack / "base.yaml"
    base.write_bytes(base.read_bytes().replace(b"\n", b"\r\n"))  # the same text, other bytes
    assert loadcache.recall(entry) is None


@pytest.mark.parametrize("inside", [True, False])
def test_on_windows_only_a_folder_in_the_users_profile_is_trusted(pack, monkeypatch, tmp_path, inside):
    entry = _entry(pack)
    _plant(entry, 99)
    entry.chmod(0o666)   # what POSIX would refuse: on Windows only the folder's place counts
    monkeypatch.setattr(loadcache, "WINDOWS", True)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path if inside else tmp_path / "elsewhere"))
    monkeypatch.delenv("USERPROFILE", raising=False)
    assert _rate(pack / "mapping.yaml") == (99 if inside else 7)
