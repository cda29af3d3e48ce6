"""Dependency direction: encoder/ never imports llava_ov/; scripts/ and eval/ use public APIs only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_encoder_never_imports_llava_ov():
    files = _py_files("encoder")
    assert files, "encoder/ has no Python files"
    offenders = {
        str(f.relative_to(ROOT)): sorted(m for m in _imported_modules(f) if m.split(".")[0] == "llava_ov")
        for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"encoder/ must not import llava_ov: {offenders}"


def test_entry_points_use_public_apis():
    """scripts/, eval/ and benchmarks/ may import package modules but no private (_underscore) module."""
    offenders = []
    for folder in ("scripts", "eval", "benchmarks"):
        for f in _py_files(folder) if (ROOT / folder).exists() else []:
            for mod in _imported_modules(f):
                parts = mod.split(".")
                if parts[0] in ("encoder", "llava_ov") and any(p.startswith("_") for p in parts[1:]):
                    offenders.append(f"{f.relative_to(ROOT)}: {mod}")
    assert not offenders, offenders


def test_detector_sees_a_violation(tmp_path):
    """The checker itself must flag an offending import (guards against a test that cannot fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom llava_ov.model import X\nimport llava_ov\n")
    assert {"llava_ov.model", "llava_ov"} <= _imported_modules(bad)
