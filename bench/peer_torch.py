"""Our own PyTorch DiT / Skip-DiT train step: the peer `train_throughput.py --peer` times.

Written from docs REFERENCE §1-3 (not copied from the official code) to do the work of
our JAX step (`skipdit_jax/train/step.py`): noise and timesteps drawn per step, label
dropout 0.1, forward in float32 eager mode, the hybrid loss (MSE on eps + the VLB term with
a stop-gradient on eps), backward, global-norm clipping, AdamW, EMA of every parameter.
The attention is `F.scaled_dot_product_attention` (what timm's `Attention`, used by the
official models, calls). Parameter names follow the official state_dict, so
`skipdit_jax.models.convert.to_official(params, model)` loads into `PeerDiT` directly.

Tensors are NCHW here, as in PyTorch; our JAX model takes NHWC.

  python bench/peer_torch.py [--size S/4] [--batch 8] [--repeats 5]   # prints one JSON

torch is an optional dependency (`pip install -e '.[peer]'`).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (depth, width, heads), as skipdit_jax.models.registry.SIZES.
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
         "Tiny": (6, 64, 4), "Mini": (8, 128, 4)}


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """(M,) positions -> (M, dim) float64: [sin | cos] halves, MAE frequencies."""
  omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  ang = np.outer(pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)


def pos_table(dim: int, grid: int) -> np.ndarray:
  """Fixed 2-D sin-cos table (grid*grid, dim); the first half encodes the column."""
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


class TimestepEmbedder(nn.Module):
  def __init__(self, dim: int, freq: int = 256):
    super().__init__()
    self.freq = freq
    self.mlp = nn.Sequential(nn.Linear(freq, dim), nn.SiLU(), nn.Linear(dim, dim))

  def forward(self, t: torch.Tensor) -> torch.Tensor:
    half = self.freq // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float()[:, None] * f[None]
    return self.mlp(torch.cat([torch.cos(a), torch.sin(a)], dim=-1))


class LabelEmbedder(nn.Module):
  def __init__(self, num_classes: int, dim: int):
    super().__init__()
    self.embedding_table = nn.Embedding(num_classes + 1, dim)  # last row: the null class

  def forward(self, y: torch.Tensor) -> torch.Tensor:
    return self.embedding_table(y)


class Attention(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    n, t, d = x.shape
    qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, T, hd)
    return self.proj(o.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
  return x * (1 + scale[:, None]) + shift[:, None]


def _ln(x: torch.Tensor) -> torch.Tensor:
  return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class Block(nn.Module):
  """adaLN-Zero block: x (N, T, D), c (N, D)."""

  def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.attn = Attention(dim, heads)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

  def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=-1)
    x = x + g1[:, None] * self.attn(_modulate(_ln(x), s1, sc1))
    return x + g2[:, None] * self.mlp(_modulate(_ln(x), s2, sc2))


class SkipLinear(nn.Module):
  def __init__(self, dim: int):
    super().__init__()
    self.linear = nn.Linear(2 * dim, dim)


class FinalLayer(nn.Module):
  def __init__(self, dim: int, out: int):
    super().__init__()
    self.linear = nn.Linear(dim, out)
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

  def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
    return self.linear(_modulate(_ln(x), shift, scale))


class PatchEmbed(nn.Module):
  def __init__(self, channels: int, dim: int, patch: int):
    super().__init__()
    self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D), tokens row-major


class PeerDiT(nn.Module):
  """DiT (long_skip=False) or Skip-DiT: x (N, C, H, W), t (N,), y (N,) -> (N, C_out, H, W).

  Initialised as REFERENCE §1 (Xavier linears, zero adaLN and final layer); the Skip-DiT
  fusions keep PyTorch's default init, as the official code does."""

  def __init__(self, *, input_size: int = 32, patch: int = 4, channels: int = 4,
               dim: int = 384, depth: int = 12, heads: int = 6, num_classes: int = 1000,
               learn_sigma: bool = True, long_skip: bool = False):
    super().__init__()
    if long_skip and depth % 2:
      raise ValueError(f"depth={depth} is odd; long skips need an even depth")
    self.patch, self.channels, self.grid = patch, channels, input_size // patch
    self.out_channels = 2 * channels if learn_sigma else channels
    self.long_skip, self.depth = long_skip, depth
    self.x_embedder = PatchEmbed(channels, dim, patch)
    self.t_embedder = TimestepEmbedder(dim)
    self.y_embedder = LabelEmbedder(num_classes, dim)
    self.register_buffer("pos_embed", torch.from_numpy(
        pos_table(dim, self.grid)[None].astype(np.float32)), persistent=False)
    self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
    if long_skip:
      self.skip_norms = nn.ModuleList(nn.LayerNorm(2 * dim, eps=1e-6)
                                      for _ in range(depth // 2))
      self.skip_linears = nn.ModuleList(SkipLinear(dim) for _ in range(depth // 2))
    self.final_layer = FinalLayer(dim, patch * patch * self.out_channels)
    self._init()

  def _init(self) -> None:
    fusions = {id(m.linear) for m in getattr(self, "skip_linears", [])}
    for m in self.modules():
      if isinstance(m, nn.Linear) and id(m) not in fusions:
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    w = self.x_embedder.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(self.x_embedder.proj.bias)
    nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
    for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
      nn.init.normal_(lin.weight, std=0.02)
    zero = [b.adaLN_modulation[1] for b in self.blocks] + [
        self.final_layer.adaLN_modulation[1], self.final_layer.linear]
    for lin in zero:
      nn.init.zeros_(lin.weight)
      nn.init.zeros_(lin.bias)

  def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = self.x_embedder(x) + self.pos_embed
    c = self.t_embedder(t) + self.y_embedder(y)
    half, skips = self.depth // 2, []
    for i, blk in enumerate(self.blocks):
      if self.long_skip and i >= half:
        j = i - half
        h = self.skip_linears[j].linear(self.skip_norms[j](torch.cat([h, skips.pop()], -1)))
      h = blk(h, c)
      if self.long_skip and i < half:
        skips.append(h)
    out = self.final_layer(h, c)                       # (N, T, p*p*C_out), features (p, p, C)
    n, g, p = out.shape[0], self.grid, self.patch
    out = out.reshape(n, g, g, p, p, self.out_channels)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(n, self.out_channels, g * p, g * p)


class Tables:
  """The linear-beta diffusion tables (float64 numpy -> float32 torch), T = 1000."""

  def __init__(self, num_steps: int = 1000):
    betas = np.linspace(1e-4, 0.02, num_steps, dtype=np.float64) * (1000.0 / num_steps)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    f = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    self.num_steps = num_steps
    self.sqrt_ac, self.sqrt_1m_ac = f(np.sqrt(ac)), f(np.sqrt(1.0 - ac))
    self.sqrt_recip_ac, self.sqrt_recipm1_ac = f(np.sqrt(1.0 / ac)), f(np.sqrt(1.0 / ac - 1))
    self.post_log_var = f(np.log(np.append(post_var[1], post_var[1:])))
    self.log_betas = f(np.log(betas))
    self.coef1 = f(betas * np.sqrt(ac_prev) / (1.0 - ac))
    self.coef2 = f((1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac))


def _at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
  return table[t][:, None, None, None]


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
  return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def hybrid_losses(model: nn.Module, tab: Tables, x0: torch.Tensor, t: torch.Tensor,
                  noise: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
  """Per-example (N,) mse, vb (bits/dim; NLL at t = 0, KL elsewhere) and loss = mse + vb.

  x0, noise: (N, C, H, W); t: (N,) int64 in [0, T); y: (N,) labels (dropout applied)."""
  x_t = _at(tab.sqrt_ac, t) * x0 + _at(tab.sqrt_1m_ac, t) * noise
  eps, v = model(x_t, t, y).chunk(2, dim=1)
  mse = (noise - eps).square().mean(dim=(1, 2, 3))
  true_mean = _at(tab.coef1, t) * x0 + _at(tab.coef2, t) * x_t
  true_logvar = _at(tab.post_log_var, t)
  frac = (v + 1.0) / 2.0
  logvar = frac * _at(tab.log_betas, t) + (1.0 - frac) * true_logvar
  x0_pred = _at(tab.sqrt_recip_ac, t) * x_t - _at(tab.sqrt_recipm1_ac, t) * eps.detach()
  mean = _at(tab.coef1, t) * x0_pred + _at(tab.coef2, t) * x_t
  kl = 0.5 * (-1.0 + logvar - true_logvar + torch.exp(true_logvar - logvar)
              + (true_mean - mean).square() * torch.exp(-logvar))
  inv_std = torch.exp(-0.5 * logvar)
  centered = x0 - mean
  cdf_plus = _std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = _std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_p = torch.where(
      x0 < -0.999, torch.log(cdf_plus.clamp(min=1e-12)),
      torch.where(x0 > 0.999, torch.log((1.0 - cdf_min).clamp(min=1e-12)),
                  torch.log((cdf_plus - cdf_min).clamp(min=1e-12))))
  kl = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
  nll = -log_p.mean(dim=(1, 2, 3)) / math.log(2.0)
  vb = torch.where(t == 0, nll, kl) * (tab.num_steps / 1000.0)
  return dict(loss=mse + vb, mse=mse, vb=vb)


class PeerStep:
  """One model, its AdamW (lr 1e-4, no weight decay), clipping and EMA: `step(x0, y)`
  runs a whole train step on (N, C, H, W) latents and (N,) labels, returns the loss."""

  def __init__(self, model: PeerDiT, *, num_classes: int = 1000, lr: float = 1e-4,
               grad_clip: float = 1.0, ema_decay: float = 0.9999, drop_prob: float = 0.1,
               seed: int = 0):
    self.model, self.num_classes = model.train(), num_classes
    self.tab = Tables()
    self.params = [p for p in model.parameters() if p.requires_grad]
    self.ema = [p.detach().clone() for p in self.params]
    self.opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    self.grad_clip, self.ema_decay, self.drop_prob = grad_clip, ema_decay, drop_prob
    self.gen = torch.Generator().manual_seed(seed)

  def step(self, x0: torch.Tensor, y: torch.Tensor) -> float:
    n = x0.shape[0]
    t = torch.randint(0, self.tab.num_steps, (n,), generator=self.gen)
    noise = torch.randn(x0.shape, generator=self.gen)
    drop = torch.rand(n, generator=self.gen) < self.drop_prob
    y = torch.where(drop, torch.full_like(y, self.num_classes), y)
    loss = hybrid_losses(self.model, self.tab, x0, t, noise, y)["loss"].mean()
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
    self.opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
    return float(loss.detach())


def build(size: str, long_skip: bool, *, input_size: int = 32, channels: int = 4,
          num_classes: int = 1000) -> PeerDiT:
  """A registry-style size 'S/4' as a PeerDiT."""
  name, patch = size.split("/")
  depth, dim, heads = SIZES[name]
  return PeerDiT(input_size=input_size, patch=int(patch), channels=channels, dim=dim,
                 depth=depth, heads=heads, num_classes=num_classes, long_skip=long_skip)


def load_official(model: PeerDiT, state_dict: dict) -> None:
  """Copy an official-named numpy state_dict (e.g. convert.to_official) into `model`."""
  sd = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()
        if k != "pos_embed"}
  model.load_state_dict(sd, strict=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", default="S/4")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--image_size", type=int, default=32)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  x = torch.randn(args.batch, 4, args.image_size, args.image_size)
  y = torch.randint(0, 1000, (args.batch,))
  steps = {k: PeerStep(build(args.size, skip, input_size=args.image_size))
           for k, skip in (("dit", False), ("skipdit", True))}
  times: dict[str, list[float]] = {k: [] for k in steps}
  for r in range(args.warmup + args.repeats):
    for k, s in steps.items():
      t0 = time.perf_counter()
      s.step(x, y)
      if r >= args.warmup:
        times[k].append(time.perf_counter() - t0)
  out = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch,
         "size": args.size}
  for k, ts in times.items():
    t = float(np.median(ts))
    out[k] = {"step_ms": t * 1e3, "img_per_s": args.batch / t}
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
