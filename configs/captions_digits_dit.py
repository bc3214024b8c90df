"""The image caption demo: the digits Skip-DiT conditioned on captions instead of labels.

Every training digit gets a caption from the train templates ("a handwritten seven", "the
digit 7", ...; skipdit_jax/text/captions.py) and its bundled-MiniLM sentence embedding
(pooled, 384-d), added to the timestep embedding through one Linear (`model.cond =
"text_pooled"`); 10 % of captions are dropped to the empty caption's embedding, CFG's null.
After training, 50 samples per digit are drawn from held-out templates ("an image of the
numeral 7", ...) uncached and with the official T2V cache schedule (Skip-Cache N2-700-50:
full while t >= 700, then every 2nd step, cached steps run the first and last block), and
`caption_accuracy` is the fraction a logistic regression fitted on real digits reads as
the digit the caption names.
"""
import ml_collections

from configs import digits_skipdit
from skipdit_jax.sampling.cache_plan import official_t2v


def with_captions(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A class demo made a caption demo: pooled MiniLM captions, the T2V cache schedule."""
  c.model.cond, c.model.caption_channels = "text_pooled", 384
  c.model.pooled_projection = "linear"  # linear | mlp: Linear-SiLU-Linear (text_cond.py)
  c.data.captions.enabled = True
  c.train.ema_warmup = True  # a short run's EMA is not dominated by the init
  c.sample.grid_per_class = 0  # no periodic class grids for a text model
  c.sample.cache.update(official_t2v("N2-700-50"))
  return c


def get_config() -> ml_collections.ConfigDict:
  return with_captions(digits_skipdit.get_config())
