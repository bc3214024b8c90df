"""SkyTimelapse unconditional Skip-Latte-XL/2 (the released `sky-skip.pt`; Taichi-HD and
FaceForensics are the same model): `configs/ucf101_skiplatte_xl2.py` without classes
(num_classes 0: no label embedder) and without guidance (CFG 1.0), VIDEO.md §1.4.
"""
import ml_collections

from configs import ucf101_skiplatte_xl2


def get_config() -> ml_collections.ConfigDict:
  c = ucf101_skiplatte_xl2.get_config()
  c.data.num_classes = 0
  c.model.class_dropout_prob = 0.0
  c.sample.cfg_scale = 1.0
  c.sample.guided_channels = None
  c.sample.num_per_class = 8
  return c
