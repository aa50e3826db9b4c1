"""The base of every configuration section: a frozen msgspec struct checked on loading.

Each room declares its own sections (``ThresholdConfig``, ``AlertConfig``, …) on this
base; the orchestration layer composes them into one ``Settings``. Ranges are
``msgspec.Meta`` constraints, checked by :meth:`Config.validated` and by the settings
loader, which names the path of a bad key; cross-field rules go in ``__post_init__``.

Subclasses inherit ``frozen`` and ``forbid_unknown_fields``; msgspec does not inherit
``kw_only``, and mypy wants ``frozen`` restated, so a section says both itself.

>>> class Example(Config, frozen=True, kw_only=True):
...     k: int = 3
>>> Example.validated(k=2).to_json()
{'k': 2}
>>> Example.validated(kk=2)
Traceback (most recent call last):
...
msgspec.ValidationError: Object contains unknown field `kk`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import msgspec


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A configuration section: immutable, keyword-only, unknown keys refused."""

    @classmethod
    def validated(cls, **values: Any) -> Self:
        """A config from keyword values, every constraint checked (``msgspec.convert``)."""
        return msgspec.convert(values, cls)

    def checked(self) -> Self:
        """This config, once its constraints hold (calling the class does not check them)."""
        msgspec.convert(self.to_json(), type(self))
        return self

    def to_json(self) -> dict[str, Any]:
        """The config as a plain dict (JSON-able)."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        """Rebuild a config from :meth:`to_json` output; unknown keys are an error."""
        return msgspec.convert(dict(obj), cls)
