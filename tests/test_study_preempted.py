"""Weights cut short are never scored as final: `train_to_end` (which bench/study.py and
bench/cache_quality.py train through) stops a preempted run with an error naming the step,
before any cache sweep (the checkpoint stays for the resume)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import study  # noqa: E402

from skipdit_jax.train import loop  # noqa: E402


def test_preempted_training_stops_the_study(tmp_path, monkeypatch):
  config = study.load_config(os.path.join(ROOT, "configs", "digits_skipdit.py"), {})
  calls = []

  def preempted_train(cfg, workdir, on_sample=None):
    calls.append(workdir)
    return {"preempted": True, "steps": 7}, None
  monkeypatch.setattr(loop, "train", preempted_train)
  with pytest.raises(SystemExit, match=r"preempted at step 7 of .*rerun the same command"):
    study.train_with_curve("twin", config, str(tmp_path), None, {"num_samples": 10},
                           None, print)
  assert calls == [str(tmp_path)]


def test_a_finished_run_passes_through(tmp_path, monkeypatch):
  config = study.load_config(os.path.join(ROOT, "configs", "digits_skipdit.py"), {})
  done = ({"preempted": False, "steps": config.train.num_steps}, "state")
  monkeypatch.setattr(loop, "train", lambda cfg, workdir, **kw: done)
  assert loop.train_to_end(config, str(tmp_path), "twin") == done
