"""Child processes the tests start at the same time (the machine has two cores), then
await one by one; not a test module itself."""
from __future__ import annotations

import subprocess
import tempfile


def start(argv: list[str], **popen_kw) -> subprocess.Popen:
  """`argv` running in the background. Its output goes to files: a pipe that nobody reads
  while another child is awaited could fill up and block this one."""
  out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
  p = subprocess.Popen(argv, stdout=out, stderr=err, text=True, **popen_kw)
  p.outputs = (out, err)
  return p


def finish(p: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
  """Waits for `p` (killed after `timeout` s, then the TimeoutExpired propagates) and
  returns what `subprocess.run(..., capture_output=True, text=True)` would."""
  try:
    p.wait(timeout=timeout)
  finally:
    if p.poll() is None:
      p.kill()
      p.wait()
  texts = []
  for f in p.outputs:
    f.seek(0)
    texts.append(f.read())
    f.close()
  return subprocess.CompletedProcess(p.args, p.returncode, *texts)
