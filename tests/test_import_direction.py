"""Dependency direction: encoder/ never imports llava_ov/; scripts/ and eval/ use public APIs only; no
import cycle between the modules of encoder/ and llava_ov/ (imports inside functions included), and
imports inside functions only for the optional or heavy dependencies of :data:`LAZY_IMPORTS`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("encoder", "llava_ov")

#: The one list of imports allowed inside a function in encoder/ and llava_ov/: optional extras (a run
#: without them works) or heavy native stacks loaded only on the paths that use them. Everything else,
#: our own modules first of all, is imported at the top of the module.
LAZY_IMPORTS = {
    "deepspeed": "heavy (CUDA op builders); only when an engine or a process group is made",
    "transformers": "heavy; the LLM and the transformers towers load it on use",
    "peft": "only with LoRA",
    "flash_attn": "optional GPU extra",
    "torch.nn.attention.varlen": "CUDA-only kernel, absent from some torch builds",
    "faiss": "optional extra (kmeans)",
    "lmms_eval": "optional extra (eval)",
    "wandb": "optional logger",
    "matplotlib": "heavy; only to write PNGs",
    "huggingface_hub": "network client; only to fetch a hub id",
    "av": "native FFmpeg bindings; only to decode or encode video",
}


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


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out.update(id(n) for n in ast.walk(child))
    return out


def _imports(path: Path, module: str, modules: set[str]) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import of ``path`` outside ``if TYPE_CHECKING``;
    ``from pkg import sub`` names the submodule, relative imports are resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level + (path.name == "__init__.py")] or [module]
                base = ".".join(package + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.extend((name, id(node) in in_function) for name in names)
    return out


def import_graph(root: Path, packages: tuple[str, ...]) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """Module → the modules of ``packages`` it imports (importing ``a.b.c`` runs ``a``, ``a.b`` and
    ``a.b.c``; a module's own parent packages are already running), and every (module, import) made
    inside a function."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    lazy = []
    for module, path in files.items():
        for name, inside in _imports(path, module, set(files)):
            if inside:
                lazy.append((module, name))
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in files and target != module and not module.startswith(target + "."):
                    edges[module].add(target)
    return edges, lazy


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_even_inside_functions():
    edges, _ = import_graph(ROOT, PACKAGES)
    assert not cycles(edges), f"import cycles between modules: {cycles(edges)}"


def test_imports_inside_functions_are_only_the_listed_heavy_or_optional_ones():
    _, lazy = import_graph(ROOT, PACKAGES)
    allowed = [
        (m, name)
        for m, name in lazy
        if name.split(".")[0] in LAZY_IMPORTS
        or any(name.startswith(k + ".") or name == k for k in LAZY_IMPORTS)
    ]
    offenders = sorted(set(lazy) - set(allowed))
    assert not offenders, f"import these at the top of the module (or list them in LAZY_IMPORTS): {offenders}"


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    edges, lazy = import_graph(tmp_path, ("pkg",))
    assert cycles(edges) == [["pkg.a", "pkg.b"]] and lazy == [("pkg.b", "pkg.a")]
    assert "pkg.a" not in edges["pkg.c"]


def test_detector_sees_a_violation(tmp_path):
    """The checker itself must flag an offending import (guards against a test that cannot fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom llava_ov.model import X\nimport llava_ov\n")
    assert {"llava_ov.model", "llava_ov"} <= _imported_modules(bad)
