"""The package's layers hold by themselves: every import edge points down (or sideways), the math and the sampler
zoo load nothing above them, and nothing outside genstudio/families/ names a family or branches on a model kind."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genstudio", "samplers", "ui")

# Bottom to top; a module may import its own layer and those below. The longest matching prefix decides.
LAYERS: list[tuple[str, ...]] = [
    ("genstudio.core",),
    ("samplers",),
    ("genstudio.atomic", "genstudio.data", "genstudio.images", "genstudio.pairs", "genstudio.presets",
     "genstudio.processes"),
    ("genstudio.nets", "genstudio.checks", "genstudio.config", "genstudio.model", "genstudio.objective",
     "genstudio.ema", "genstudio.lineage", "genstudio.speed"),
    ("genstudio.families",),
    ("genstudio.checkpoint", "genstudio.interop"),
    ("genstudio.api", "genstudio.edit", "genstudio.train", "genstudio.evaluation", "genstudio.reflow",
     "genstudio.publish", "genstudio.train_classifier", "genstudio.likelihoods", "genstudio.learned_grids",
     "genstudio.neon", "genstudio.audit", "genstudio.sfbd"),
    ("genstudio.cli", "genstudio.eval", "ui", "genstudio"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def layer(name: str) -> int | None:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return None if best is None else best[0]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at any depth of the file (lazy imports count)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def test_every_module_has_a_layer():
    missing = sorted(n for n in modules() if layer(n) is None)
    assert not missing, f"give these modules a layer in tests/test_layering.py: {missing}"


def test_no_import_points_up():
    mods = modules()
    known = set(mods)
    upward = []
    for name, path in mods.items():
        for target in imports(name, path, known):
            if layer(target) is not None and layer(target) > layer(name):
                upward.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("what", ["samplers", "genstudio.core"])
def test_math_and_samplers_load_nothing_above_them(what):
    code = f"import sys, {what}; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout.split()
    ours = [m for m in loaded if m.split(".")[0] in PACKAGES]
    allowed = [m for m in ours if m in ("genstudio", "samplers") or layer(m) in (0, 1)]
    assert ours == allowed, f"import {what} loads {sorted(set(ours) - set(allowed))}"


def _names_and_kinds() -> set[str]:
    """Family names and model kinds, less the prediction types that share a word with them ("score")."""
    from genstudio.core.predictions import PREDICTIONS
    from genstudio.families import FAMILIES

    return (set(FAMILIES) | {k for f in FAMILIES.values() for k in f.kinds if k != "field"}) - set(PREDICTIONS)


def _is_model_kind(node: ast.AST) -> bool:
    """`model.kind`, `x.model.kind`: a model's kind (an extractor's or a record's kind is another matter)."""
    return (isinstance(node, ast.Attribute) and node.attr == "kind"
            and (getattr(node.value, "id", None) == "model" or getattr(node.value, "attr", None) == "model"))


def test_nothing_outside_families_names_a_family_or_a_kind():
    """String constants equal to a family's name or a model kind, and comparisons of a model's kind, stay inside
    genstudio/families/ (and the sampler, editor and likelihood registrations, which declare the kinds they drive)."""
    names = _names_and_kinds()
    found = []
    for name, path in modules().items():
        if layer(name) in (0, 1) or name.startswith("genstudio.families"):
            continue
        tree = ast.parse(path.read_text())
        registrations = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Call)
                         and getattr(node.func, "id", getattr(node.func, "attr", ""))
                         in ("register", "register_editor", "register_likelihood")
                         for c in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in registrations:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} names {node.value!r}")
            if isinstance(node, ast.Compare) and any(_is_model_kind(s) for s in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} compares a model kind")
    assert not found, "\n".join(found)
