"""The error every layer raises for a bad config field (a base module: imports nothing of ours)."""
from __future__ import annotations


class ConfigError(ValueError):
  """One or more config fields are invalid; `.problems` lists one line per field."""

  def __init__(self, problems: list[str]):
    self.problems = list(problems)
    super().__init__("invalid config:\n  - " + "\n  - ".join(self.problems))
