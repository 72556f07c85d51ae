"""Regenerate (or ``--check``) docs/error-classification.md from vrrl_gpu's error tables.

Run: python docs/gen_error_classification.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from vrrl_gpu.evidence._docs import main

PAGE = Path(__file__).resolve().parent / "error-classification.md"

if __name__ == "__main__":
    flag = "--check" if "--check" in sys.argv[1:] else "--write"
    raise SystemExit(main([flag, str(PAGE)]))
