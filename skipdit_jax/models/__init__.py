"""DiT / Skip-DiT and Latte / Skip-Latte Flax modules, the size registry and parameter
helpers."""
from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.latte import Latte, validate_latte
from skipdit_jax.models.registry import (SIZES, create, init_params, init_variables,
                                         is_video, logical_axes, param_count, parse_name,
                                         size_of)
from skipdit_jax.models.latte_t2v import DiTT2V, LatteT2V
from skipdit_jax.models.text_cond import CONDS, TextCond, caption_condition
from skipdit_jax.models.convert import (detect_fields, from_official, load_official,
                                        save_official, to_official)
from skipdit_jax.models.upcycle import (init_from_official, trainable_mask, upcycle,
                                        with_trainable)

__all__ = ["CONDS", "DiT", "DiTT2V", "Latte", "LatteT2V", "TextCond", "caption_condition",
           "size_of", "SIZES", "create", "detect_fields", "from_official",
           "init_from_official", "init_params", "init_variables", "is_video", "load_official",
           "logical_axes", "param_count", "parse_name", "save_official", "to_official",
           "trainable_mask", "upcycle", "validate_latte", "validate_shape", "with_trainable"]
