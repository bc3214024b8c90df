"""Matplotlib figures for the evaluation JSONs (headless, Agg backend)."""
from __future__ import annotations

import os
import textwrap
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _set_labels(ax, xlabel: str, ylabel: str, title: str) -> None:
  """Axis labels and title; long ones are wrapped, not clipped at the figure's edge."""
  ax.set(xlabel=xlabel, ylabel=textwrap.fill(ylabel, 45), title=textwrap.fill(title, 60))


def line_plot(path: str, series: Series, *, xlabel: str, ylabel: str, title: str = "",
              logy: bool = False, markers: bool = True, ylim=None,
              errors: Mapping[str, Sequence[float]] | None = None) -> str:
  """One line per name -> (xs, ys), with +-`errors[name]` bars where given; writes a PNG
  to `path` and returns it."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (xs, ys) in series.items():
    if errors and name in errors:
      ax.errorbar(list(xs), list(ys), yerr=list(errors[name]), marker="o" if markers else None,
                  ms=3, capsize=3, label=name)
    else:
      ax.plot(list(xs), list(ys), marker="o" if markers else None, ms=3, label=name)
  _set_labels(ax, xlabel, ylabel, title)
  if logy:
    ax.set_yscale("log")
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.grid(alpha=0.3)
  if len(series) > 1:
    ax.legend(fontsize=8)
  return _save(fig, path)


def heatmaps(path: str, grids: Mapping[str, np.ndarray], *, xs: Sequence[float],
             ys: Sequence[float], xlabel: str, ylabel: str, title: str = "",
             vmin: float | None = None, vmax: float = 1.0) -> str:
  """Side-by-side heatmaps (rows = ys, columns = xs) sharing one colour scale."""
  grids = {k: np.asarray(v, np.float64) for k, v in grids.items()}
  lo = min(float(g.min()) for g in grids.values()) if vmin is None else vmin
  fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.8), squeeze=False,
                           constrained_layout=True)  # places suptitle and colour bar
  for ax, (name, g) in zip(axes[0], grids.items()):
    im = ax.imshow(g, origin="lower", vmin=lo, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs], fontsize=7)
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys], fontsize=7)
    ax.set(xlabel=xlabel, title=name)
    if ax is axes[0][0]:  # one shared y label; the others would overlap their neighbours
      ax.set_ylabel(ylabel)
    for (r, c), v in np.ndenumerate(g):
      ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=6, color="w")
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
  fig.suptitle(title, fontsize=9)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def scatter_plot(path: str, points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 *, xlabel: str, ylabel: str, title: str = "",
                 annotate: Mapping[str, Sequence[str]] | None = None) -> str:
  """Connected points per name (e.g. quality vs speedup for each cache policy)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (xs, ys) in points.items():
    ax.plot(list(xs), list(ys), marker="o", ms=4, label=name)
    for x, y, txt in zip(xs, ys, (annotate or {}).get(name, ())):
      ax.annotate(txt, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
  _set_labels(ax, xlabel, ylabel, title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return _save(fig, path)
