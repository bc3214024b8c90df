"""DiT / Skip-DiT Flax modules, the size registry and parameter helpers."""
from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.registry import (SIZES, create, init_params, init_variables,
                                         logical_axes, param_count, parse_name)

__all__ = ["DiT", "SIZES", "create", "init_params", "init_variables", "logical_axes",
           "param_count", "parse_name", "validate_shape"]
