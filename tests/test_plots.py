"""Figures keep every label inside the saved image."""
import matplotlib
import pytest

matplotlib.use("Agg")

from skipdit_jax.eval import plots


@pytest.mark.parametrize("kind", ["line", "scatter"])
def test_long_title_and_ylabel_stay_inside_the_figure(tmp_path, monkeypatch, kind):
  figs = []
  real_close = plots.plt.close
  monkeypatch.setattr(plots.plt, "close", lambda fig: figs.append(fig))
  label = "claim statistic (cache_quality_vs_deepcache); > 0: the paper's claim holds"
  series = {"a": ([8, 16, 28], [1.0, 2.0, 0.5])}
  labels = dict(xlabel="depth", ylabel=label, title=label + " vs depth (mean +- std)")
  if kind == "line":
    path = plots.line_plot(str(tmp_path / "p.png"), series, errors={"a": [0.1, 0.2, 0.3]},
                           **labels)
  else:
    path = plots.scatter_plot(str(tmp_path / "p.png"), series, **labels)
  assert (tmp_path / "p.png").stat().st_size > 0 and path.endswith("p.png")
  fig = figs[0]
  renderer = fig.canvas.get_renderer()
  box = fig.bbox
  ax = fig.axes[0]
  for text in (ax.title, ax.yaxis.label):
    ext = text.get_window_extent(renderer)
    assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (text.get_text(), ext, box)
    assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (text.get_text(), ext, box)
  real_close(fig)
