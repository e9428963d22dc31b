"""Every YAML block of docs/recipes.md, merged into tests/data/tiny.yaml, validates without
errors: the recipes cannot drift from the language."""
from __future__ import annotations

import re

import pytest
import yaml
from conftest import ROOT

from cpfmap.language import loader

BLOCKS = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8"), re.S)


def test_the_recipes_have_examples():
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_recipe_validates(block, tmp_path):
    base = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(loader.merge(base, yaml.safe_load(block)), sort_keys=False))
    errors = [f.format() for f in loader.check(path) if f.severity == "error"]
    assert not errors, errors
