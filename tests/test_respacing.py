"""Respacing equals ADM's / DiT's `space_timesteps` (diffusion/respace.py there).

`adm_space_timesteps` below is an independent plain-Python transcription of the published
algorithm: split T into len(counts) near-equal sections (the first T % len(counts) one
longer); within a section of size S taking n steps, frac_stride = (S-1)/(n-1) (1 if n <= 1),
and the kept indices are round(cur) while cur starts at 0.0 and grows by frac_stride after
each step (an accumulated float, as published; round(i * frac_stride) differs for 278
counts at T = 1000). "ddimK": the first integer stride in [1, T) with len(range(0, T,
stride)) == K, an error otherwise.
"""
from __future__ import annotations

import numpy as np
import pytest

from skipdit_jax import diffusion as D

T = 1000


def adm_space_timesteps(num_timesteps, section_counts):
  if isinstance(section_counts, str):
    if section_counts.startswith("ddim"):
      desired = int(section_counts[len("ddim"):])
      for i in range(1, num_timesteps):
        if len(range(0, num_timesteps, i)) == desired:
          return set(range(0, num_timesteps, i))
      raise ValueError("no stride")
    section_counts = [int(x) for x in section_counts.split(",")]
  size_per = num_timesteps // len(section_counts)
  extra = num_timesteps % len(section_counts)
  start_idx = 0
  all_steps = []
  for i, section_count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if size < section_count:
      raise ValueError("section too small")
    frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
    cur_idx = 0.0
    for _ in range(section_count):
      all_steps.append(start_idx + round(cur_idx))
      cur_idx += frac_stride
    start_idx += size
  return set(all_steps)


def test_every_single_section_count_matches_adm():
  bad = [n for n in range(1, T + 1)
         if D.space_timesteps(T, n) != sorted(adm_space_timesteps(T, [n]))]
  assert bad == []
  # The counts the issue found wrong, and that they are not the trivial sets.
  for n in (21, 23, 31):
    assert D.space_timesteps(T, n) == sorted(adm_space_timesteps(T, str(n)))
  assert len(D.space_timesteps(T, 250)) == 250


def test_respace_timestep_map_and_betas_for_odd_counts():
  base = D.Diffusion.create(D.betas_for("linear", T))
  for n in (21, 23, 31, 250):
    r = D.respace(base, n)
    kept = np.array(sorted(adm_space_timesteps(T, [n])))
    np.testing.assert_array_equal(r.timestep_map, kept)
    ac = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64))[kept]
    np.testing.assert_allclose(r.betas, 1.0 - ac / np.append(1.0, ac[:-1]), rtol=1e-10)


@pytest.mark.parametrize("spec", ["10,15,20", "1,2,3", "7,0,9", "0,5", "333,333,333",
                                  "1,1,1,1,1,1,1", "21,23,31,35", "250,250,250,250",
                                  "3, 4"])
def test_section_strings_match_adm(spec):
  want = sorted(adm_space_timesteps(T, spec))
  assert D.space_timesteps(T, spec) == want
  assert D.space_timesteps(T, [int(c) for c in spec.split(",")]) == want


def test_section_strings_other_lengths_match_adm():
  rng = np.random.default_rng(0)
  for total in (7, 100, 999, 1000, 1001):
    for _ in range(40):
      sections = int(rng.integers(1, 6))
      size = total // sections
      counts = [int(c) for c in rng.integers(0, size + 1, sections)]
      if sum(counts) == 0:
        counts[0] = 1
      want = sorted(adm_space_timesteps(total, counts))
      assert D.space_timesteps(total, counts) == want, (total, counts)


def test_ddim_strides_match_adm():
  for k in range(1, T + 1):
    try:
      want = sorted(adm_space_timesteps(T, f"ddim{k}"))
    except ValueError:
      with pytest.raises(ValueError, match=r"sample\.num_steps='ddim"):
        D.space_timesteps(T, f"ddim{k}")
    else:
      assert D.space_timesteps(T, f"ddim{k}") == want


@pytest.mark.parametrize("spec,msg", [
    (0, "positive int K"), (-3, "positive int K"), (1001, "cannot take 1001"),
    ("0,0", "at least one step"), ([5, -1], ">= 0"), (True, "positive int K"),
    ([2.5], "positive int K"), ("ddim0", "ddimK"), ("ddim1", "no integer stride"),
    ("ddim", "ddimK"), ("1," * 1001 + "1", "sections for only 1000"),
    ("a,b", "section counts like"), ("400,400,400", "section of 334")])
def test_bad_counts_name_the_field(spec, msg):
  with pytest.raises(ValueError, match=r"sample\.num_steps=") as e:
    D.space_timesteps(T, spec)
  assert msg in str(e.value)
