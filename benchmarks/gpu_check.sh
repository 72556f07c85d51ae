#!/usr/bin/env bash
# The whole GPU check in one command, on a machine with an NVIDIA GPU:
#   vrrl doctor --json, VRRL_REQUIRE_GPU=1 pytest -m gpu, bench_gpu.py and bench_recorder.py on CuPy, then
#   the attribution matrix of -m gpu (one child process per case) in the time that is left.
# Everything goes under one folder (default ./gpu-check-out); summary.md there is a markdown table for
# benchmarks/RESULTS.md. Installs nothing from the network: wheels in .whl/ (if any) are installed with
# --no-index into /tmp/site. Each step has its own timeout and a failing step does not stop the others; the
# whole run stays inside VRRL_GPU_CHECK_BUDGET seconds (default 450, under the 8 minutes one H100/H200 gets).
# Exit 0 when every step passed, 1 otherwise.
#
#   benchmarks/gpu_check.sh [OUT_DIR]
set -u

OUT=${1:-./gpu-check-out}
PY=${PYTHON:-python3}
BUDGET=${VRRL_GPU_CHECK_BUDGET:-450}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
DEADLINE=$((START + BUDGET))
ROWS=()
ALL_OK=1

# The checkout itself, not an installed copy, then the carried wheels.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# Seconds for a step: its own limit, or what is left of the budget (minus a little for the summary).
limit() {
    local want=$1 left=$((DEADLINE - $(date +%s) - 5))
    if [ "$left" -lt "$want" ]; then want=$left; fi
    echo "$want"
}

# row STEP STATUS SECONDS DETAIL
row() {
    ROWS+=("| $1 | $2 | $3 | $4 |")
    echo "gpu_check: $1: $2 (${3}s) $4" >&2
    case $2 in ok) ;; *) ALL_OK=0 ;; esac
}

# run STEP LIMIT LOGFILE CMD...: runs CMD with a timeout, output to LOGFILE; sets RC and SECS.
run() {
    local step=$1 want=$2 log=$3
    shift 3
    local t
    t=$(limit "$want")
    if [ "$t" -lt 5 ]; then
        RC=skip
        SECS=0
        echo "not run: the time budget ($BUDGET s) is spent" >"$log"
        return
    fi
    local t0
    t0=$(date +%s)
    timeout -k 10 "$t" "$@" >"$log" 2>&1
    RC=$?
    SECS=$(($(date +%s) - t0))
    if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then RC="timeout after ${t}s"; fi
}

status_of() {
    case $1 in
    0) echo ok ;;
    skip) echo "skipped (no time left)" ;;
    timeout*) echo "FAILED ($1)" ;;
    *) echo "FAILED (exit $1)" ;;
    esac
}

last_line() { grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1 | tr '|' '/' | cut -c1-160; }

# Counts from a pytest -v log (its per-test lines, not the -ra summary), so a step cut short by its timeout
# still says how far it got; the total is what pytest said it selected.
pytest_counts() {
    local out="" n what total
    for what in PASSED FAILED ERROR SKIPPED; do
        n=$(grep -cE "::.* $what +\[ *[0-9]+%\]" "$1" 2>/dev/null)
        out="$out${out:+, }${n:-0} ${what,,}"
    done
    total=$(grep -oE '([0-9]+) selected' "$1" 2>/dev/null | head -n 1 | cut -d' ' -f1)
    echo "$out of ${total:-?}"
}

cd "$REPO" || exit 1

# ---- 0. wheels carried in .whl/ (the device machine has no network) ---------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
    run wheels 60 "$OUT/wheels.log" "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
    row "install .whl/*.whl (--no-index)" "$(status_of "$RC")" "$SECS" "$(ls .whl/*.whl | wc -l) wheel(s)"
fi

# ---- 1. doctor -----------------------------------------------------------------------------------------
run doctor 60 "$OUT/doctor.log" "$PY" -m vrrl_gpu doctor --device cupy --json
# The JSON alone (stdout), for machines; the log keeps stderr too.
"$PY" - "$OUT/doctor.log" "$OUT/doctor.json" <<'EOF' || true
import json, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
start = text.find("{")
try:
    report = json.loads(text[start:text.rindex("}") + 1]) if start >= 0 else None
except ValueError:
    report = None
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
EOF
DOCTOR_DETAIL=$("$PY" - "$OUT/doctor.json" <<'EOF' 2>/dev/null || echo "no report"
import json, sys
r = json.load(open(sys.argv[1]))
if not r:
    print("no JSON report (see doctor.log)")
else:
    bad = [c["name"] for c in r["checks"] if c["status"] == "fail"]
    print(("failed: " + ", ".join(bad)) if bad else f"all checks passed on {r['backend']}")
EOF
)
row "vrrl doctor --device cupy --json" "$(status_of "$RC")" "$SECS" "$DOCTOR_DETAIL"

# ---- 2. the GPU test suite, the attribution matrix last (144 child processes: it gets what time is left) ----
MATRIX=tests/recorder/test_attribution.py
run pytest 200 "$OUT/pytest-gpu.log" env VRRL_REQUIRE_GPU=1 "$PY" -m pytest -m gpu -v -p no:cacheprovider \
    --junitxml="$OUT/pytest-gpu.xml" --ignore="$MATRIX" tests
row "VRRL_REQUIRE_GPU=1 pytest -m gpu (all but the attribution matrix)" "$(status_of "$RC")" "$SECS" \
    "$(pytest_counts "$OUT/pytest-gpu.log")"

# ---- 3. GPU benchmarks ---------------------------------------------------------------------------------
run bench_gpu 60 "$OUT/bench_gpu.txt" "$PY" benchmarks/bench_gpu.py --device cupy
status=$(status_of "$RC")
if [ "$RC" = 0 ] && grep -q "^no GPU: skipped" "$OUT/bench_gpu.txt"; then status="FAILED (no GPU: skipped)"; fi
row "bench_gpu.py --device cupy" "$status" "$SECS" "$(last_line "$OUT/bench_gpu.txt")"

run bench_recorder 60 "$OUT/bench_recorder.txt" "$PY" benchmarks/bench_recorder.py --device cupy
row "bench_recorder.py --device cupy" "$(status_of "$RC")" "$SECS" "$(last_line "$OUT/bench_recorder.txt")"

# ---- 4. the attribution matrix on the device, in the time that is left ---------------------------------
run matrix 400 "$OUT/pytest-gpu-matrix.log" env VRRL_REQUIRE_GPU=1 "$PY" -m pytest -m gpu -v -p no:cacheprovider \
    --junitxml="$OUT/pytest-gpu-matrix.xml" "$MATRIX"
row "VRRL_REQUIRE_GPU=1 pytest -m gpu $MATRIX" "$(status_of "$RC")" "$SECS" \
    "$(pytest_counts "$OUT/pytest-gpu-matrix.log")"

# ---- summary -------------------------------------------------------------------------------------------
MACHINE=$("$PY" - "$OUT/doctor.json" <<'EOF' 2>/dev/null || echo "unknown machine"
import json, platform, sys
r = json.load(open(sys.argv[1])) or {}
checks = {c["name"]: c for c in r.get("checks", [])}
devs = checks.get("cuda devices", {}).get("data", {}).get("devices") or []
dr = checks.get("driver/runtime", {}).get("data", {})
cupy = checks.get("cupy", {}).get("data", {}).get("version", "?")
gpu = ", ".join(f"{d['name']} (sm_{d['compute_capability'].replace('.', '')})" for d in devs) or "NO GPU SEEN"
drv, rt = dr.get("driver_version", 0), dr.get("runtime_version", 0)
v = lambda x: f"{x // 1000}.{x % 1000 // 10}" if x else "none"
print(f"{gpu}; driver CUDA {v(drv)}, runtime CUDA {v(rt)}, CuPy {cupy}; {platform.machine()}")
EOF
)
TOTAL=$(($(date +%s) - START))
{
    echo "## $(date -u +%Y-%m-%d): benchmarks/gpu_check.sh on $MACHINE"
    echo
    echo "Wall time ${TOTAL} s (budget ${BUDGET} s). Logs: doctor.json, pytest-gpu.log and pytest-gpu-matrix.log"
    echo "(+ .xml), bench_gpu.txt, bench_recorder.txt."
    echo
    echo "| step | status | s | detail |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    for f in bench_gpu.txt bench_recorder.txt; do
        echo
        echo "\`$f\`:"
        echo
        echo '```'
        tail -n 60 "$OUT/$f" 2>/dev/null
        echo '```'
    done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
[ "$ALL_OK" = 1 ]
