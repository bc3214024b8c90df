"""train/writers.py: TensorBoard events read back with an independent TFRecord parser."""
from __future__ import annotations

import logging
import struct

import numpy as np
from tensorboardX.proto import event_pb2

from skipdit_jax.train import writers


def read_events(logdir) -> list:
  """Every Event of the event files under `logdir` (TFRecord framing: u64 length, u32 crc,
  payload, u32 crc)."""
  events = []
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      payload = data[i + 12:i + 12 + n]
      i += 12 + n + 4
      ev = event_pb2.Event()
      ev.ParseFromString(payload)
      events.append(ev)
  return events


def test_scalars_images_and_hparams_reach_the_event_file_and_the_console(tmp_path, caplog):
  w = writers.create_writer(str(tmp_path), asynchronous=False)
  with caplog.at_level(logging.INFO):
    w.write_hparams({"model.depth": 4, "train.lr": 1e-4})
    w.write_scalars(3, {"loss": np.float32(0.5), "images_per_s": 12.25})
    w.write_scalars(7, {"loss": 0.25})
    w.write_images(7, {"samples": np.zeros((1, 4, 6, 3), np.uint8)})
  w.close()
  scalars = sorted((ev.step, v.tag, v.simple_value) for ev in read_events(tmp_path)
                   for v in ev.summary.value if v.HasField("simple_value"))
  assert scalars == [(3, "images_per_s", 12.25), (3, "loss", 0.5), (7, "loss", 0.25)]
  images = [(ev.step, v.image.height, v.image.width) for ev in read_events(tmp_path)
            for v in ev.summary.value if v.HasField("image")]
  assert images == [(7, 4, 6)]
  texts = [bytes(v.tensor.string_val[0]).decode() for ev in read_events(tmp_path)
           for v in ev.summary.value if v.tag.startswith("hparams")]
  assert texts and "| model.depth | 4 |" in texts[0]
  assert "[3] images_per_s=12.25, loss=0.5" in caplog.text


def test_no_logdir_writes_no_file(tmp_path, caplog):
  w = writers.create_writer(None, console=True)
  with caplog.at_level(logging.INFO):
    w.write_scalars(1, {"loss": 1.0})
  w.close()
  assert "[1] loss=1" in caplog.text and not list(tmp_path.iterdir())
