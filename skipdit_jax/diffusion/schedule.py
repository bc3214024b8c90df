"""Noise schedules, the frozen `Diffusion` table and timestep respacing.

Everything here is float64 numpy, built once in Python before `jit`. The jnp
functions in the sibling modules gather from these tables and cast to float32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Union

import numpy as np

SCHEDULES = ("linear", "cosine")
# What the model's first C output channels predict: the noise (DiT, the official
# recipe) or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho), trained on v's MSE.
PREDICTIONS = ("eps", "v")
# Spec accepted by `respace`: K steps, "ddimK", "10,20,30", or section counts.
RespaceSpec = Union[int, str, Sequence[int]]


def betas_for(schedule: str, num_steps: int, snr_shift: float = 1.0) -> np.ndarray:
  """Returns the (num_steps,) float64 betas of a named schedule.

  "linear": 1e-4..0.02 at 1000 steps, both ends scaled by 1000/num_steps so
  other lengths keep the same total noise (ADM). "cosine": squaredcos_cap_v2,
  betas from alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, capped at 0.999.
  `snr_shift` s > 1 divides the signal-to-noise ratio alpha_bar / (1 - alpha_bar) of
  every timestep by s (`shift_snr`); 1 leaves the schedule as it is.
  """
  if schedule not in SCHEDULES:
    raise ValueError(
        f"diffusion.schedule={schedule!r} is not a known schedule; "
        f"use one of {list(SCHEDULES)}.")
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
      or num_steps < 1:
    raise ValueError(
        f"diffusion.num_train_steps={num_steps!r} must be a positive int "
        "(1000 in DiT).")
  num_steps = int(num_steps)
  if isinstance(snr_shift, bool) or not isinstance(snr_shift, (int, float)) \
      or not math.isfinite(snr_shift) or snr_shift < 1:
    raise ValueError(f"diffusion.snr_shift={snr_shift!r} must be a number >= 1 (1: the "
                     "schedule as it is).")
  if schedule == "linear":
    scale = 1000.0 / num_steps
    betas = np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
  else:
    def alpha_bar(s: float) -> float:
      return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.asarray([min(1.0 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps),
                            0.999) for i in range(num_steps)], dtype=np.float64)
  return betas if snr_shift == 1 else shift_snr(betas, snr_shift)


def shift_snr(betas: np.ndarray, shift: float) -> np.ndarray:
  """Betas whose alpha_bar' has SNR(t) / shift at every t: alpha_bar' = a / (a + s(1-a)).

  The shift that simple diffusion applies for resolution: a clip of F frames that share
  one content shows it to the denoiser F times, so at a given t it is easier to read than
  one image, and a shift of ~F moves training toward the noise levels where the
  condition decides what is drawn. (On the moving-digits demo a shift of 8 did not make
  the label count: docs/RESULTS.md, video.) Betas are capped at 0.999 as cosine's."""
  a = np.cumprod(1.0 - np.asarray(betas, np.float64))
  shifted = a / (a + shift * (1.0 - a))
  prev = np.append(1.0, shifted[:-1])
  return np.minimum(1.0 - shifted / prev, 0.999)


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
  a = np.array(a, dtype=dtype, copy=True)
  a.setflags(write=False)
  return a


@dataclasses.dataclass(frozen=True, eq=False)
class Diffusion:
  """Gaussian diffusion coefficient tables, all (T,) float64, read-only.

  `timestep_map[i]` is the original (training) timestep of respaced index i;
  the model is always called with `timestep_map[t]`, never with `t` itself.
  `prediction` says what the model's output means (PREDICTIONS; `process.model_eps`
  turns it into eps, the form every step and loss reads). Equality and hash follow
  (betas, timestep_map, prediction), so the object can be a static jit argument or a
  closed-over constant.
  """
  betas: np.ndarray
  alphas_cumprod: np.ndarray
  alphas_cumprod_prev: np.ndarray
  sqrt_alphas_cumprod: np.ndarray
  sqrt_one_minus_alphas_cumprod: np.ndarray
  sqrt_recip_alphas_cumprod: np.ndarray
  sqrt_recipm1_alphas_cumprod: np.ndarray
  posterior_variance: np.ndarray
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef1: np.ndarray
  posterior_mean_coef2: np.ndarray
  timestep_map: np.ndarray
  prediction: str = "eps"

  @classmethod
  def create(cls, betas, *, timestep_map=None, prediction: str = "eps") -> "Diffusion":
    """Builds every table from `betas` (T,); `timestep_map` defaults to arange(T)."""
    if prediction not in PREDICTIONS:
      raise ValueError(f"diffusion.prediction={prediction!r} is not one of "
                       f"{list(PREDICTIONS)} (eps: the official recipe; v: v-prediction)")
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
      raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}.")
    if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas >= 1):
      raise ValueError("betas must all lie in the open interval (0, 1); "
                       f"got min {betas.min()} and max {betas.max()}.")
    n = betas.size
    if timestep_map is None:
      timestep_map = np.arange(n)
    timestep_map = np.asarray(timestep_map)
    if timestep_map.shape != (n,) or not np.issubdtype(timestep_map.dtype, np.integer):
      raise ValueError(f"timestep_map must be ({n},) ints to match betas, got "
                       f"shape {timestep_map.shape} dtype {timestep_map.dtype}.")
    if np.any(timestep_map < 0) or np.any(np.diff(timestep_map) <= 0):
      raise ValueError("timestep_map must be non-negative and strictly increasing.")

    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    # post_var[0] is 0 (x_0 is known given x_1); IDDPM replaces it by post_var[1]
    # before the log so the log variance stays finite. With a single step there
    # is no second entry; beta_0 is the natural stand-in.
    first = post_var[1] if n > 1 else betas[0]
    post_log_var = np.log(np.append(first, post_var[1:]))
    f = lambda a: _frozen(a, np.float64)
    return cls(
        betas=f(betas),
        alphas_cumprod=f(ac),
        alphas_cumprod_prev=f(ac_prev),
        sqrt_alphas_cumprod=f(np.sqrt(ac)),
        sqrt_one_minus_alphas_cumprod=f(np.sqrt(1.0 - ac)),
        sqrt_recip_alphas_cumprod=f(np.sqrt(1.0 / ac)),
        sqrt_recipm1_alphas_cumprod=f(np.sqrt(1.0 / ac - 1.0)),
        posterior_variance=f(post_var),
        posterior_log_variance_clipped=f(post_log_var),
        posterior_mean_coef1=f(betas * np.sqrt(ac_prev) / (1.0 - ac)),
        posterior_mean_coef2=f((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)),
        timestep_map=_frozen(timestep_map, np.int32),
        prediction=prediction,
    )

  @property
  def num_timesteps(self) -> int:
    return int(self.betas.shape[0])

  def _key(self) -> tuple:
    return (self.betas.tobytes(), self.timestep_map.tobytes(), self.prediction)

  def __eq__(self, other) -> bool:
    return isinstance(other, Diffusion) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def __repr__(self) -> str:
    return (f"Diffusion(num_timesteps={self.num_timesteps}, "
            f"timestep_map=[{self.timestep_map[0]}..{self.timestep_map[-1]}], "
            f"prediction={self.prediction!r})")


def space_timesteps(num_timesteps: int, spec: RespaceSpec) -> list[int]:
  """Returns the sorted indices in [0, num_timesteps) kept by `spec`; the same set as
  ADM's / DiT's `space_timesteps` for every spec it accepts.

  int K -> K evenly spaced steps (one section). "ddimK" -> range(0, T, stride) for
  the smallest integer stride that yields exactly K steps (an error if none does).
  A list of counts (or "10,15,20") splits [0, T) into len(counts) consecutive
  sections, the first T % len(counts) one step longer, and takes count evenly
  spaced steps from each (its first and last step when the count is > 1; a count
  of 0 takes none of that section).
  """
  field = "sample.num_steps"
  if isinstance(spec, str):
    text = spec.strip()
    if text.startswith("ddim"):
      k_text = text[len("ddim"):]
      if not k_text.isdigit() or int(k_text) < 1:
        raise ValueError(f"{field}={spec!r}: write 'ddimK' with K a positive int, "
                         "e.g. 'ddim50'.")
      k = int(k_text)
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == k:
          return list(range(0, num_timesteps, stride))
      raise ValueError(f"{field}={spec!r}: no integer stride in [1, {num_timesteps}) "
                       f"takes exactly {k} of {num_timesteps} steps; pick another K or "
                       f"use {k} (an int) for even spacing.")
    try:
      counts = [int(s) for s in text.split(",")]
    except ValueError:
      raise ValueError(f"{field}={spec!r}: use an int K, 'ddimK', or comma-separated "
                       "section counts like '10,15,20'.") from None
  elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
    counts = [int(spec)]
  else:
    counts = list(spec) if isinstance(spec, (list, tuple)) else None
  if not counts or any(isinstance(c, bool) or not isinstance(c, (int, np.integer))
                       or c < 0 for c in counts) or sum(counts) < 1:
    raise ValueError(f"{field}={spec!r}: give a positive int K (steps), 'ddimK', or "
                     "section counts >= 0 that take at least one step in total.")
  if len(counts) > num_timesteps:
    raise ValueError(f"{field}={spec!r}: {len(counts)} sections for only "
                     f"{num_timesteps} steps (diffusion.num_train_steps).")
  base, extra = divmod(num_timesteps, len(counts))
  start, kept = 0, []
  for i, count in enumerate(counts):
    size = base + (1 if i < extra else 0)
    if count > size:
      raise ValueError(f"{field}={spec!r}: cannot take {count} steps from a section of "
                       f"{size} (of {num_timesteps} steps in total); use at most {size}.")
    stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
    # The position is accumulated (pos += stride), as ADM does, not computed as
    # j * stride: the float sums round differently for 278 of the 1000 counts at
    # T = 1000 (e.g. 21, 23, 31), and Python's round (half to even) then picks
    # another step. The accumulation is what makes the sets identical.
    pos = 0.0
    for _ in range(int(count)):
      kept.append(start + round(pos))
      pos += stride
    start += size
  return sorted(set(kept))


def respace(diffusion: Diffusion, spec: RespaceSpec) -> Diffusion:
  """Keeps a subset of `diffusion`'s steps (see `space_timesteps`).

  The kept alphas_cumprod are unchanged; new betas are 1 - a_k / a_{k_prev}, so
  the marginals q(x_t | x_0) at kept steps equal the original ones.
  `timestep_map` composes, so respacing a respaced diffusion still maps to the
  original training timesteps.
  """
  kept = np.asarray(space_timesteps(diffusion.num_timesteps, spec))
  ac = diffusion.alphas_cumprod[kept]
  betas = 1.0 - ac / np.append(1.0, ac[:-1])
  return Diffusion.create(betas, timestep_map=diffusion.timestep_map[kept],
                          prediction=diffusion.prediction)
