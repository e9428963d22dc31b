"""A new pack from the scaffold, and the settings table a pack's README carries."""

from __future__ import annotations

from pathlib import Path

from cpfmap import resources
from cpfmap.authoring.explain import PACK_NAME
from cpfmap.errors import ConfigError
from cpfmap.language import loader


def new_pack(name: str, root: Path = Path(".")) -> Path:
    if not PACK_NAME.match(name):
        raise ConfigError(f"pack name {name!r}: use lower-case letters, digits and dashes")
    folder = root / name
    if folder.exists():
        raise ConfigError(f"{folder} already exists")
    template_dir = resources.data_path(*resources.SCAFFOLD)
    (folder / "recordings").mkdir(parents=True)
    for source in (p for p in template_dir.iterdir() if p.is_file()):
        text = source.read_text(encoding="utf-8").replace("PACKNAME", name)
        (folder / source.name.removesuffix(".tmpl")).write_text(text, encoding="utf-8", newline="\n")
    (folder / "recordings" / ".gitkeep").write_text("", encoding="utf-8")
    write_settings_table(folder / "mapping.yaml", folder / "README.md")
    return folder


def write_settings_table(mapping_path: Path, readme: Path, check: bool = False) -> bool:
    """Regenerate the README's settings table from the mapping; with check, only compare.
    True when the README is (or now is) up to date."""
    from cpfmap.authoring.reference import readme_with_settings
    text = readme.read_text(encoding="utf-8")
    fresh = readme_with_settings(text, loader.load(mapping_path))
    if check or fresh == text:
        return fresh == text
    readme.write_text(fresh, encoding="utf-8", newline="\n")
    return True

