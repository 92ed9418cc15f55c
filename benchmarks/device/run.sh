#!/usr/bin/env bash
# The GPU session's one script: everything that needs a GPU, in about 7.5 minutes, offline.
#
#   benchmarks/device/run.sh                    # from anywhere; PYTHON=/path/to/python to choose the interpreter
#   ASTEDGE_DEVICE_BUDGET_S=450 SIZE=base ITERS=100 benchmarks/device/run.sh
#
# Needs: an NVIDIA GPU and driver, this repository and a Python environment with astedge installed (the .venv
# carried over). Uses when present: nvcc + cmake (builds the CUDA fbank library for this GPU only; otherwise the
# library already in astedge/lib or build/ is used), compute-sanitizer, torch with CUDA, tensorrt. No network.
#
# Steps (each with its own time cap; a step is skipped when the budget is nearly spent):
#   1. versions and the GPU (nvidia-smi, driver, nvcc, Python packages)         -> env.txt
#   2. build libastedge_fbank (+ host library) for this GPU's architecture       -> build.log
#   3. pytest -m "cuda or tensorrt": kernel parity, device pipelines, graphs      -> pytest.log, junit.xml
#   4. compute-sanitizer memcheck over the kernel tests; racecheck, synccheck and initcheck over
#      benchmarks/device/sanitize.py (small inputs: those tools are slow)        -> sanitizer-*.log
#   5. benchmarks/fbank_gpu.py: µs per clip at batch 1 and 64 vs torch ops       -> fbank-gpu-*.{json,md}
#   6. benchmarks/device/e2e_window.py: audio -> logits vs engine only           -> e2e-window-*.{json,md}
# Everything goes to benchmarks/results/device-<gpu>-<date>/, summarized in summary.md and summary.json.
# Exit status: 0 when every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUDGET=${ASTEDGE_DEVICE_BUDGET_S:-450}
SIZE=${SIZE:-base}
ITERS=${ITERS:-100}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONDONTWRITEBYTECODE=1 PIP_NO_INDEX=1 HF_HUB_OFFLINE=1
# This checkout's astedge first, whatever path an editable install in the carried venv points at.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -n "$gpu" ] || gpu=$("$PYTHON" -c "from astedge.features.cuda_driver import shared_driver; print(shared_driver().name)" 2>/dev/null)
[ -n "$gpu" ] || gpu=unknown-gpu
slug=$(printf '%s' "$gpu" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
OUT=$ROOT/benchmarks/results/device-$slug-$(date -u +%Y-%m-%d)
mkdir -p "$OUT"
SUMMARY=$OUT/summary.tsv
: >"$SUMMARY"
failed=0

# step NAME CAP_SECONDS COMMAND...: runs with a timeout of min(CAP, budget left - 5), logs to $OUT/NAME.log.
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - SECONDS - 5))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped\t0\tbudget spent\n' "$name" >>"$SUMMARY"
    return 0
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  local started=$SECONDS status
  echo "== $name (cap ${cap}s)"
  timeout --kill-after=10 "$cap" "$@" >"$OUT/$name.log" 2>&1
  status=$?
  local took=$((SECONDS - started)) verdict=ok
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then verdict=timeout; failed=1
  elif [ "$status" -ne 0 ]; then verdict="failed ($status)"; failed=1; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$verdict" "$took" "$(tail -1 "$OUT/$name.log" | tr '\t' ' ' | cut -c1-200)" >>"$SUMMARY"
  echo "   $verdict in ${took}s: $(tail -1 "$OUT/$name.log" | cut -c1-160)"
}

skip() {  # skip NAME REASON
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$SUMMARY"
  echo "== $1 skipped: $2"
}

# 1. Versions and the GPU.
{
  echo "date: $(date -u +%FT%TZ)"; echo "gpu: $gpu"; echo "host: $(uname -a)"
  nvidia-smi 2>&1 | head -20
  nvidia-smi --query-gpu=name,uuid,driver_version,compute_cap,clocks.sm,clocks.max.sm,power.limit --format=csv 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -2
  ls /usr/local/cuda*/bin/nvcc 2>/dev/null
  command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null
  cmake --version 2>/dev/null | head -1
  timeout 60 "$PYTHON" - <<'PY'
import json, platform
from astedge.measure import machine
from astedge.features.cuda_driver import shared_driver
info = {"python": platform.python_version(), "driver_api": shared_driver().describe(),
        "packages": machine.package_versions(("numpy", "torch", "tensorrt", "tensorrt-cu12", "tensorrt-cu13",
                                              "onnxruntime", "onnxruntime-gpu", "astedge"))}
try:
    import torch
    info["torch_cuda"] = {"version": torch.version.cuda, "available": torch.cuda.is_available()}
except ImportError as err:
    info["torch_cuda"] = str(err)
print(json.dumps(info, indent=1))
PY
} >"$OUT/env.txt" 2>&1
echo "results: $OUT"

# 2. The library, for this GPU only (fast), with line info for the sanitizer.
nvcc_path=$(command -v nvcc || ls -d /usr/local/cuda/bin/nvcc 2>/dev/null | head -1)
if [ -n "$nvcc_path" ] && command -v cmake >/dev/null; then
  BUILD=$ROOT/build/device
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [ -n "$arch" ] || arch=native  # CMake >= 3.24
  step build 100 bash -c "cmake -S '$ROOT' -B '$BUILD' -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER='$nvcc_path' \
      -DCMAKE_CUDA_ARCHITECTURES=$arch -DASTEDGE_FBANK_LINEINFO=ON && cmake --build '$BUILD' -j \$(nproc) && ls -l '$BUILD'/*.so"
  if [ -f "$BUILD/libastedge_fbank.so" ]; then
    export ASTEDGE_FBANK_LIBRARY=$BUILD/libastedge_fbank.so ASTEDGE_FBANK_HOST_LIBRARY=$BUILD/libastedge_fbank_host.so
  fi
else
  skip build "no nvcc or cmake here: using the library in astedge/lib or build/"
fi
"$PYTHON" -c "from astedge import cuda_fbank as C; print('fbank library:', C.find_library(), C.find_library(C.HOST_LIBRARY_NAME))" >>"$OUT/env.txt" 2>&1

# 3. The tests that need a GPU (and TensorRT where it is installed).
tests=(tests/test_cuda_fbank.py tests/test_gpu_path.py)
"$PYTHON" -c "import tensorrt" 2>/dev/null && tests+=(tests/test_export.py)
step pytest 80 "$PYTHON" -m pytest -q -p no:cacheprovider -m "cuda or tensorrt" -rs --junitxml="$OUT/junit.xml" "${tests[@]}"

# 4. compute-sanitizer.
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$sanitizer" ]; then
  step sanitizer-memcheck 70 "$sanitizer" --tool memcheck --error-exitcode 1 --leak-check full \
    "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -k "not torch" tests/test_cuda_fbank.py
  step sanitizer-racecheck 45 "$sanitizer" --tool racecheck --racecheck-report all --error-exitcode 1 \
    "$PYTHON" benchmarks/device/sanitize.py
  step sanitizer-synccheck 25 "$sanitizer" --tool synccheck --error-exitcode 1 "$PYTHON" benchmarks/device/sanitize.py
  step sanitizer-initcheck 25 "$sanitizer" --tool initcheck --error-exitcode 1 "$PYTHON" benchmarks/device/sanitize.py
else
  skip sanitizer "compute-sanitizer not found (CUDA toolkit not installed)"
fi

# 5. The fbank on the GPU vs torch ops.
step fbank-gpu 50 "$PYTHON" benchmarks/fbank_gpu.py --iters 200 --out "$OUT"

# 6. End to end: audio -> logits vs the engine alone.
step e2e-window 110 "$PYTHON" benchmarks/device/e2e_window.py --size "$SIZE" --iters "$ITERS" --out "$OUT"

# Summary.
"$PYTHON" - "$OUT" "$gpu" "$SECONDS" <<'PY'
import json, sys
from pathlib import Path
out, gpu, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines() if line]
data = {"gpu": gpu, "seconds": seconds, "steps": [{"step": r[0], "result": r[1], "seconds": int(r[2]), "last_line": r[3]}
                                                  for r in rows]}
for path in sorted(out.glob("fbank-gpu-*.json")):
    data["fbank-gpu"] = json.loads(path.read_text()).get("targets")
for path in sorted(out.glob("e2e-window-*.json")):
    report = json.loads(path.read_text())
    data["e2e-window"] = {"missing": report.get("missing", {})}
    for name, r in report.get("engines", {}).items():
        data["e2e-window"][name] = {"engine_only_p50_ms": r["engine_only"]["host"]["p50_ms"],
                                    **{f"{k}_p50_ms": r[k]["host"]["p50_ms"] for k in ("file_window", "stream_hop")},
                                    **{f"{k}_within_10_percent": r[k]["within_10_percent"]
                                       for k in ("file_window", "stream_hop")}}
(out / "summary.json").write_text(json.dumps(data, indent=1) + "\n")
lines = [f"# Device run — {gpu}", "", f"{seconds} s in all; environment in env.txt.", "",
         "| step | result | s | last line |", "|---|---|---|---|"]
lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3].replace('|', '/')} |" for r in rows]
for kind in ("fbank-gpu", "e2e-window"):
    for path in sorted(out.glob(f"{kind}-*.md")):
        lines += ["", path.read_text().replace("# ", "## ", 1)]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines[:6 + len(rows)]))
PY
echo "results in $OUT (${SECONDS}s)"
exit $failed
