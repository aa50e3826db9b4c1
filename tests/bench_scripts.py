"""A script of ``bench/`` (not a package) loaded as a module, for tests of what it measures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(script: str) -> ModuleType:
    """``bench/<script>.py`` as module ``plantwatch_bench_<script>``, registered in
    ``sys.modules`` (dataclasses need their module there) and loaded once."""
    name = f"plantwatch_bench_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{script}.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load bench/{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
