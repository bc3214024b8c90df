"""Dataset sources and the deterministic per-process batch pipeline.

`load_source(name, split=, data=config.data)` returns a dataset as float32 images in
[-1, 1] (N, H, W, C), or video clips (N, F, H, W, C) (maybe a lazy `LazyRows` column),
and int32 labels; `BatchIterator` turns it into a resumable stream
of numpy batches, each process taking its slice of every global batch. This
package knows nothing of models. A new source registers itself with
`@register_source("name")` in its own module, imported below.
"""
from skipdit_jax.data.idx import parse_idx, read_idx
from skipdit_jax.data.pipeline import BatchIterator
from skipdit_jax.data.pipeline import LazyRows
from skipdit_jax.data.sources import (SOURCES, VIDEO_SOURCES, check_data_shape, load_source,
                                      register_source, source_key)
from skipdit_jax.data import debian, embedded, latents, tfds_source  # noqa: F401  (register built-in sources)
from skipdit_jax.data import clips, moving_digits  # noqa: F401,E402

__all__ = ["SOURCES", "VIDEO_SOURCES", "BatchIterator", "LazyRows", "check_data_shape",
           "load_source", "parse_idx", "read_idx", "register_source", "source_key"]
