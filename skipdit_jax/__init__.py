"""Skip-DiT in JAX/Flax: training, cached sampling and evaluation.

Import subpackages directly (`from skipdit_jax import models`); this module
imports nothing so that `import skipdit_jax` stays cheap.
"""
__version__ = "0.1.0"
