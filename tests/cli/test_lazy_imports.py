"""Each ``vrrl`` command imports only what it runs, and the packages' lazy names (PEP 562) all resolve.

Every command builds the whole parser, so a module imported at the top of any command module is paid by all
of them: the time of its import and the memory it keeps, which counts against the peak RSS of every reading
command (issue 13). The ``vrrl`` process is run as a child, so that nothing this test process imported hides
an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vrrl_gpu
from tests.helpers.analysis_logs import NAMES, run_rows, write_log

ROOT = str(Path(vrrl_gpu.__file__).resolve().parents[1])

#: Modules that neither ``export --format jsonl`` nor ``dump`` needs: what the lazy imports keep out.
NOT_NEEDED = (
    "vrrl_gpu.analysis._diff",
    "vrrl_gpu.analysis._report",
    "vrrl_gpu.analysis._summary",
    "vrrl_gpu.analysis._stats",
    "vrrl_gpu.analysis._fleet",
    "vrrl_gpu.analysis._fleet_report",
    "vrrl_gpu.analysis._follow",
    "vrrl_gpu.recorder",
    "vrrl_gpu.reproduce._sampler",
    "vrrl_gpu.reproduce._trials",
    "vrrl_gpu.reproduce._replay",
    "vrrl_gpu.reproduce._minimize",
    "vrrl_gpu.backends._doctor",
    "vrrl_gpu.backends._twin",
    "vrrl_gpu.capture._drain",
    "vrrl_gpu.capture._staging",
    "duckdb",
    "pyarrow",
)

# Runs vrrl's main() as the `vrrl` process would, then writes every module it imported.
_RUN = """
import json, sys
from vrrl_gpu._cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH", "")]))
    return env


def _modules_of(tmp_path: Path, *argv: str) -> set[str]:
    seen = tmp_path / "seen.json"
    cmd = [sys.executable, "-c", _RUN, str(seen), *argv]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_child_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    got = json.loads(seen.read_text(encoding="utf-8"))
    assert got["code"] == 0
    return set(got["modules"])


@pytest.mark.parametrize(
    "argv",
    [("export", "--format", "jsonl", "-o", "out.jsonl"), ("dump",), ("dump", "--csv")],
    ids=lambda a: " ".join(a[:3]),
)
def test_reading_commands_import_only_what_they_run(tmp_path: Path, argv: tuple[str, ...]) -> None:
    log = write_log(tmp_path / "a.vrrl", run_rows(20), names=NAMES)
    mods = _modules_of(tmp_path, *argv, str(log))
    assert "vrrl_gpu.analysis._export" in mods  # the probe sees the command's own imports
    assert sorted(m for m in NOT_NEEDED if m in mods) == []


def test_a_command_still_imports_what_it_runs(tmp_path: Path) -> None:
    log = write_log(tmp_path / "a.vrrl", run_rows(20), names=NAMES)
    mods = _modules_of(tmp_path, "stats", str(log))
    assert {"vrrl_gpu.analysis._summary", "vrrl_gpu.analysis._stats"} <= mods


LAZY_PACKAGES = (
    "vrrl_gpu",
    "vrrl_gpu.analysis",
    "vrrl_gpu.reproduce",
    "vrrl_gpu.backends",
    "vrrl_gpu.capture",
)

# In a fresh interpreter, so that each name goes through the package's __getattr__: every name of __all__
# imports by `from package import name`, is the object its home module defines, and is listed by dir().
_NAMES = """
import importlib, sys
pkg = sys.argv[1]
mod = importlib.import_module(pkg)
bad = []
for name in mod.__all__:
    ns = {}
    try:
        exec(f"from {pkg} import {name}", ns)
    except ImportError as e:
        bad.append(f"{name}: {e}")
        continue
    home = mod._HOMES.get(name)
    if home is not None:
        h = importlib.import_module(home)
        want = h if home == f"{pkg}.{name}" else getattr(h, name)
        if ns[name] is not want:
            bad.append(f"{name}: not {home}'s")
missing = set(mod.__all__) - set(dir(mod))
if missing:
    bad.append(f"not in dir(): {sorted(missing)}")
try:
    exec(f"from {pkg} import no_such_name", {})
    bad.append("no_such_name imported")
except ImportError:
    pass
print("\\n".join(bad))
"""


@pytest.mark.parametrize("pkg", LAZY_PACKAGES)
def test_every_lazy_name_imports(pkg: str) -> None:
    p = subprocess.run(
        [sys.executable, "-c", _NAMES, pkg], capture_output=True, text=True, timeout=120, env=_child_env()
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""


@pytest.mark.parametrize("pkg", LAZY_PACKAGES)
def test_importing_a_package_imports_none_of_its_parts(pkg: str) -> None:
    code = f"import sys, {pkg}; print(sorted(m for m in sys.modules if m.startswith('{pkg}._')))"
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_child_env()
    )
    assert p.returncode == 0, p.stderr
    # The top level keeps only its version and its errors; a subpackage nothing at all.
    assert p.stdout.strip() == ("['vrrl_gpu._version']" if pkg == "vrrl_gpu" else "[]")
