"""Collection of the package's own modules (``--doctest-modules``): ``vrrl_gpu/torch`` imports PyTorch, so
without it (and without ``CI``, which installs it and must not skip) those modules are not collected."""

from __future__ import annotations

import importlib.util
import os

collect_ignore_glob = (
    [] if importlib.util.find_spec("torch") is not None or os.environ.get("CI") else ["vrrl_gpu/torch/*"]
)
