"""``python -m vrrl_gpu`` is the ``vrrl`` command."""

from __future__ import annotations

from vrrl_gpu._cli import main

raise SystemExit(main())
