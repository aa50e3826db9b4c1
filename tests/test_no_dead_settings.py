"""Every documented setting exists, and some code reads it (no dead settings).

``deploy/plantwatch.toml`` is the list users read: it must load through the one settings
loader (unknown keys are refused), name every setting there is, and each setting must be
read somewhere in the packages beyond the struct that declares it.
"""

from __future__ import annotations

import io
import itertools
import re
import tokenize
import tomllib
from functools import cache
from pathlib import Path

import msgspec
import pytest

from plantwatch.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "plantwatch.toml"
PACKAGES = ("common", "stream", "models", "alerts", "plantwatch")
#: Settings whose names the defaults file shows commented out (no value to give), or that
#: are a table of free-form properties.
OPTIONAL = {("kafka", "properties")}


def _documented() -> dict[str, dict[str, object]]:
    return tomllib.loads(DEPLOY.read_text(encoding="utf-8"))


def _commented_keys() -> set[tuple[str, str]]:
    """``# key = value`` lines under a section: documented settings with no default value."""
    found: set[tuple[str, str]] = set()
    section = ""
    for line in DEPLOY.read_text(encoding="utf-8").splitlines():
        head = re.match(r"^\[([a-z_.]+)\]", line)
        if head:
            section = head.group(1)
            continue
        key = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if key and "." not in section:
            found.add((section, key.group(1)))
    return found


def _all_settings() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    defaults = Settings()
    for section in msgspec.structs.fields(Settings):
        for field in msgspec.structs.fields(getattr(defaults, section.name)):
            out.append((section.name, field.name))
    return out


@cache
def _attributes_read() -> frozenset[str]:
    """Every ``.name`` attribute access in the packages' code (strings and comments aside)."""
    names: set[str] = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
            for before, token in itertools.pairwise(tokens):
                if (
                    before.type == tokenize.OP
                    and before.string == "."
                    and token.type == tokenize.NAME
                ):
                    names.add(token.string)
    return frozenset(names)


def test_the_defaults_file_loads_and_equals_the_code_defaults() -> None:
    loaded = load_settings(DEPLOY, env={})
    # The file documents the defaults: loading it changes nothing.
    assert msgspec.to_builtins(loaded) == msgspec.to_builtins(Settings())


def test_the_defaults_file_names_every_setting() -> None:
    documented = _documented()
    present = {(s, k) for s, table in documented.items() for k in table} | _commented_keys()
    missing = [item for item in _all_settings() if item not in present]
    assert not missing, f"settings missing from deploy/plantwatch.toml: {missing}"


@pytest.mark.parametrize(("section", "key"), _all_settings())
def test_every_setting_is_read_by_some_code(section: str, key: str) -> None:
    # A read is an attribute access ``.key`` in code; declarations, strings, docstrings and
    # comments do not count.
    assert key in _attributes_read(), f"setting {section}.{key} is declared but no code reads it"
