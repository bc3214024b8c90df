"""Writes the golden parameter shardings that tests/test_parallel.py pins.

Usage: python scripts/write_golden_shardings.py

One file per (model, preset): tests/golden/sharding_<model>_<preset>.json, holding
{param path: mesh axes} from the model's logical axes and the preset's rules. The test
run only reads them; run this on purpose when a change of parameter names, logical
axes or presets is intended, and review the diff. Prints one line per file
(new / changed / unchanged).
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from skipdit_jax import models, parallel  # pylint: disable=wrong-import-position
from skipdit_jax.parallel import rules as rules_lib  # pylint: disable=wrong-import-position

GOLDEN = os.path.join(ROOT, "tests", "golden")
MODELS = ("DiT-S/2", "SkipDiT-S/2", "SkipDiT-XL/2", "SkipDiT-XL/2+scan")  # +scan: stacked


def golden_path(name: str, preset: str) -> str:
  return os.path.join(GOLDEN,
                      f"sharding_{name.replace('/', '').replace('+', '_')}_{preset}.json")


def specs(name: str) -> dict[str, dict[str, str]]:
  """{preset: {param path: "(mesh axes)"}} for a model name (with "+scan" for the
  scanned block stack)."""
  model = models.create(name.split("+")[0], scan_blocks=name.endswith("+scan"))
  logical = models.logical_axes(model)
  return {preset: parallel.describe(rules_lib.mesh_specs(logical, rules))
          for preset, rules in sorted(parallel.PRESETS.items())}


def render(name: str, preset: str, got: dict[str, str]) -> str:
  return json.dumps({"model": name, "preset": preset, "specs": got}, indent=1,
                    sort_keys=True)


def main() -> None:
  os.makedirs(GOLDEN, exist_ok=True)
  for name in MODELS:
    for preset, got in specs(name).items():
      path, text = golden_path(name, preset), render(name, preset, got)
      old = open(path).read() if os.path.exists(path) else None
      if old != text:
        with open(path, "w") as f:
          f.write(text)
      state = "new" if old is None else ("unchanged" if old == text else "changed")
      print(f"{os.path.relpath(path, ROOT)}: {state} ({len(got)} params)")


if __name__ == "__main__":
  main()
