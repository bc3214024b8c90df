"""Evaluation: sample-quality scores, cache fidelity and feature-stability analyses.

Import the modules directly (nothing is imported here, so `import skipdit_jax.eval`
stays cheap):
- `frechet` (Fréchet distance, `.npz` mu/sigma stats), `kid`, `precision_recall`;
- `feature_net` (per-dataset CNN classifiers: "FD-<dataset>" features, conditional
  accuracy), `inception` (FID Inception-v3 from pytorch-fid's weights);
- `sample_quality` (real-data references and the scores of generated images);
- `image_metrics` (PSNR/SSIM), `class_accuracy` (pixel logistic-regression reader),
  `image_grid` (PNG grids);
- `stability` (per-step deep-feature similarity, perturbation grids, block Jacobian
  spectral norms), `plots` (matplotlib figures);
- `run` (`--mode=eval`).
"""
