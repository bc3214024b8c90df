"""The package's imports point one way (docs/ARCHITECTURE.md), with no cycles.

Every import statement of every module is read with `ast` -- module-level and
function-local alike, so a local import cannot hide an upward edge -- and checked against
the layer table below. A second check finds cycles between modules. Both checks are also
run on small hand-written trees, to show that they fail where they should.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "skipdit_jax"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Lower layers know nothing of higher ones; a unit may import its own modules and any
# unit of a strictly lower layer. Entry points (top-level modules) may import each other
# (no cycles) and everything below.
LAYERS: dict[str, int] = {
    "paths": -1, "errors": -1,  # base modules: workdir I/O and the config error type
    "models": 0, "diffusion": 0, "data": 0, "text": 0,
    "parallel": 1,
    "sampling": 2, "train": 2,
    "eval": 3,
}
ENTRY_LAYER = 4


def unit_of(module: str) -> str:
  """`skipdit_jax.train.loop` -> `train`; a top-level module is its own unit."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else parts[0]


def layer_of(module: str) -> int:
  return LAYERS.get(unit_of(module), ENTRY_LAYER)


def module_name(path: Path, root: Path) -> str:
  rel = path.relative_to(root.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
  """The package modules that `module` imports anywhere in its source (ours only).

  `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`.
  """
  out: set[str] = set()
  here = module.split(".") if is_package else module.split(".")[:-1]
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = ".".join(here[:len(here) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
      else:
        base = node.module or ""
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
               for a in node.names]
    else:
      continue
    for name in names:
      if name == PACKAGE or not name.startswith(PACKAGE + "."):
        continue
      while name not in known and "." in name:  # `import a.b.c` of an attribute path
        name = name.rsplit(".", 1)[0]
      if name in known and name != module:
        out.add(name)
  return out


def import_graph(root: Path) -> dict[str, set[str]]:
  files = sorted(root.rglob("*.py"))
  names = {module_name(f, root): f for f in files}
  known = set(names)
  return {m: imports_of(f.read_text(), m, f.name == "__init__.py", known)
          for m, f in names.items()}


def order_violations(graph: dict[str, set[str]]) -> list[str]:
  """Edges from a unit to a unit of the same or a higher layer (entry points excepted)."""
  bad = []
  for src, targets in graph.items():
    for dst in targets:
      if unit_of(src) == unit_of(dst) or dst == PACKAGE:
        continue
      ls, ld = layer_of(src), layer_of(dst)
      if ld > ls or (ld == ls and ls != ENTRY_LAYER):
        bad.append(f"{src} imports {dst} (layer {ls} -> {ld})")
  return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on: set[str] = set()
  out: list[list[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  units: dict[str, set[str]] = {}
  for src, targets in graph.items():
    units.setdefault(unit_of(src), set()).update(
        unit_of(t) for t in targets if unit_of(t) != unit_of(src))
  return cycles(units)


def test_every_unit_has_a_layer():
  graph = import_graph(ROOT)
  units = {unit_of(m) for m in graph if m != PACKAGE}
  packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
  assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS"
  assert units - packages, "expected top-level entry modules"


def test_imports_point_down():
  assert order_violations(import_graph(ROOT)) == []


def test_no_import_cycles():
  graph = import_graph(ROOT)
  assert cycles(graph) == []
  assert package_cycles(graph) == []


# -- the checks catch what they should, on hand-made trees ------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
  root = tmp_path / PACKAGE
  for rel, src in files.items():
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(src)
  for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
    (d / "__init__.py").touch()
  return root


def test_checks_find_a_local_upward_import_and_a_cycle(tmp_path):
  root = _tree(tmp_path, {
      "train/loop.py": "from skipdit_jax import parallel\n",
      "parallel/aot.py": "def f():\n  from skipdit_jax.train import loop\n",
      "config_check.py": "from skipdit_jax.train import warm_start\n",
      "train/warm_start.py": "def g():\n  from skipdit_jax import config_check\n",
      "models/dit.py": "from . import blocks\nfrom .blocks import Block\n",
      "models/blocks.py": "Block = 1\n",
  })
  graph = import_graph(root)
  assert graph["skipdit_jax.models.dit"] == {"skipdit_jax.models.blocks"}
  bad = order_violations(graph)
  assert "skipdit_jax.train.warm_start imports skipdit_jax.config_check (layer 2 -> 4)" in bad
  assert "skipdit_jax.parallel.aot imports skipdit_jax.train.loop (layer 1 -> 2)" in bad
  assert ["skipdit_jax.config_check", "skipdit_jax.train.warm_start"] in cycles(graph)
  assert any({"parallel", "train"} <= set(c) for c in package_cycles(graph))


def test_checks_pass_a_clean_tree(tmp_path):
  root = _tree(tmp_path, {
      "main.py": "from skipdit_jax import train, config_check\n",
      "config_check.py": "from skipdit_jax.models import dit\n",
      "train/loop.py": "import skipdit_jax.parallel.mesh\nfrom skipdit_jax import models\n",
      "parallel/mesh.py": "import jax\n",
      "models/dit.py": "import numpy\n",
  })
  graph = import_graph(root)
  assert order_violations(graph) == []
  assert cycles(graph) == [] and package_cycles(graph) == []
  assert "skipdit_jax.parallel.mesh" in graph["skipdit_jax.train.loop"]


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
