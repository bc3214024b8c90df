"""Workdir paths on local disk or object storage (`gs://...`), one code path for both.

Every file the trainer, sampler and evaluator write under `--workdir` goes through
`etils.epath` (Orbax's own path type): a local path is expanded and made absolute, a URL
is kept as it is (never `abspath`ed, which would turn `gs://B/run` into `./gs:/B/run`).
Object stores have no partial files: a whole-object write is atomic, so `write_bytes`
needs no temporary name there; on local disk it writes a temporary file and renames it.
`check_access` turns a missing bucket or missing credentials into one clear line before
any compute, instead of a hang or a traceback deep inside orbax.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from typing import Any, Iterator

from etils import epath

REMOTE_PREFIXES = ("gs://", "s3://", "az://")
_BUCKET_TIMEOUT_S = 30.0  # one bucket lookup, retries included


class WorkdirError(ValueError):
  """The workdir cannot be used; the message is one line naming --workdir and the fix."""


def is_remote(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(REMOTE_PREFIXES)


def resolve(path: str | os.PathLike) -> epath.Path:
  """A local path expanded and made absolute; an object-store URL unchanged."""
  text = os.fspath(path)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_bytes(path: str | os.PathLike, data: bytes) -> epath.Path:
  """Writes `data` to `path` (parents created); a reader never sees a half file."""
  p = resolve(path)
  if is_remote(p):
    p.write_bytes(data)  # one object upload: visible only when complete
    return p
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.parent / f".{p.name}.tmp"
  tmp.write_bytes(data)
  os.replace(tmp, p)
  return p


def write_text(path: str | os.PathLike, text: str) -> epath.Path:
  return write_bytes(path, text.encode())


def save_npz(path: str | os.PathLike, *, compressed: bool = True, **arrays: Any) -> epath.Path:
  """`np.savez[_compressed]` of `arrays` to `path` (local or remote), the name kept as is."""
  import numpy as np
  buf = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buf, **arrays)
  return write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def local_mirror(directory: str | os.PathLike) -> Iterator[str]:
  """A local directory holding `directory`'s files, for code that needs local files.

  Local: the directory itself. Remote: a temporary copy (files directly under it), whose
  new or changed files are uploaded back on a clean exit. Used for the evaluation's
  caches and plots; checkpoints never go through here (orbax writes them directly).
  """
  remote = resolve(directory)
  if not is_remote(remote):
    remote.mkdir(parents=True, exist_ok=True)
    yield os.fspath(remote)
    return
  tmp = tempfile.mkdtemp(prefix="skipdit_mirror_")
  try:
    before: dict[str, str] = {}
    if remote.exists():
      for f in remote.iterdir():
        if not f.is_dir():
          data = f.read_bytes()
          with open(os.path.join(tmp, f.name), "wb") as out:
            out.write(data)
          before[f.name] = hashlib.sha256(data).hexdigest()
    yield tmp
    for name in sorted(os.listdir(tmp)):
      local = os.path.join(tmp, name)
      if not os.path.isfile(local):
        continue
      with open(local, "rb") as f:
        data = f.read()
      if before.get(name) != hashlib.sha256(data).hexdigest():
        (remote / name).write_bytes(data)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _bucket_of(url: str) -> str:
  return url.split("://", 1)[1].split("/", 1)[0]


def check_access(workdir: str, flag: str = "--workdir") -> None:
  """Raises WorkdirError (one line) when a `gs://` workdir's bucket cannot be reached.

  Checks, in order: credentials (skipped against an emulator, STORAGE_EMULATOR_HOST, which
  takes anonymous ones), then that the bucket exists and is visible to them. Local paths
  and other schemes pass unchecked.
  """
  if not os.fspath(workdir).startswith("gs://"):
    return
  bucket = _bucket_of(workdir)
  if not bucket:
    raise WorkdirError(f"{flag}={workdir} names no bucket; use {flag}=gs://BUCKET/run")
  try:
    from google.cloud import storage
    from google.api_core import exceptions as gexc, retry as gretry
    import google.auth
    from google.auth import exceptions as auth_exc
  except ImportError as e:
    raise WorkdirError(f"{flag}={workdir} needs the Google Cloud Storage client ({e}); "
                       f"pip install 'skipdit-jax[gcs]'") from e
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    client = storage.Client()  # the emulator: anonymous credentials
  else:
    try:
      credentials, project = google.auth.default()
    except auth_exc.DefaultCredentialsError as e:
      raise WorkdirError(
          f"{flag}={workdir}: no Google Cloud credentials found "
          f"({str(e).splitlines()[0][:120]}); run `gcloud auth application-default login` or "
          f"set GOOGLE_APPLICATION_CREDENTIALS (a TPU/GCE VM uses its service account)") from e
    client = storage.Client(credentials=credentials, project=project)
  retry = gretry.Retry(deadline=_BUCKET_TIMEOUT_S)
  try:
    found = client.lookup_bucket(bucket, timeout=10.0, retry=retry)
  except gexc.Forbidden as e:
    raise WorkdirError(f"{flag}={workdir}: these credentials may not read bucket "
                       f"{bucket!r} ({e.code} {e.message[:120]}); grant them storage access "
                       f"or use another bucket") from e
  except Exception as e:  # network errors, timeouts, auth refresh failures
    raise WorkdirError(f"{flag}={workdir}: cannot reach bucket {bucket!r} "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); check the "
                       f"network and credentials") from e
  if found is None:
    raise WorkdirError(f"{flag}={workdir}: bucket {bucket!r} does not exist (or is not "
                       f"visible to these credentials); create it with `gcloud storage "
                       f"buckets create gs://{bucket}` or fix {flag}")
