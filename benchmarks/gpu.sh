#!/usr/bin/env bash
# benchmarks/gpu.sh: the GPU check of issue 16, on an NVIDIA machine. Written for the H200
# machine of the device tool (x86-64, 16 cores, Python 3.12, CUDA 13 driver, no network).
#
# Steps, in order; each one's output goes to the terminal and to $OUT/gpu.log:
#   1. install MLX's CUDA build from the wheels carried in .whl/, and check that MLX runs
#      on the GPU (if it does not, stop: nothing else would mean anything);
#   2. the compiled-path tests: tests/test_fast_paths.py, test_compile_active.py and
#      test_adagrad.py, on the GPU (MLX's default device there);
#   3. the benchmark suite, python benchmarks/run.py, on the GPU:
#      $OUT/RESULTS-gpu.md, RESULTS-gpu.json and RESULTS-gpu-sweep.png;
#   4. benchmarks/gpu_check.py: the Adagrad step's effective GB/s against the measured
#      copy bandwidth on 16.8M elements (target >= 80%) and the kernels per step on
#      4,194,304 elements in 1, 1,000 and 10,000 tensors: $OUT/gpu-check.md and .json.
# A step that fails is reported and the next one still runs (except step 1); the exit
# status is 1 if any step failed. $OUT (default /tmp/lucid-gpu) gets at most 6 files.
#
# The wheels. Fetch them once where pip reaches PyPI, in the repository root, and keep
# them out of git (they are not committed; the device tool carries them with `carry`):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_35_x86_64 -d .whl \
#       mlx==0.32.4 mlx-cuda-13==0.32.4
#   du -sh .whl    # the working tree and the wheels travel together: 64 MiB at most
# That is `mlx[cuda13]`, not `mlx[cuda]`: the `cuda` extra is mlx-cuda-12, which needs
# CUDA 12's nvidia-*-cu12 wheels (cuBLAS, cuDNN, ...: hundreds of MiB, far over what can
# be carried), while the H200 image already has the CUDA 13 ones that mlx-cuda-13 needs
# (nvidia-cublas 13, nvidia-cudnn-cu13, nvidia-nccl-cu13, nvidia-cufft 12,
# nvidia-cusolver 12, nvidia-cuda-nvrtc 13, nvidia-cuda-runtime 13, from its torch cu130).
# Both wheels install with --no-deps; step 1 checks that mlx-cuda-13's requirements are
# met. The test extras are on the image too (pytest, hypothesis, torch 2.11 there, where
# the project pins 2.13 for its CPU runs); lucid itself runs from the tree (PYTHONPATH).
#
# Usage:
#   bash benchmarks/gpu.sh                    # everything (about 5 minutes on an H200)
#   bash benchmarks/gpu.sh --quick            # every step at tiny sizes (a smoke run)
#   bash benchmarks/gpu.sh --skip-tests --sections sweep,A   # a rerun of part of it
#   bash benchmarks/gpu.sh --dry-run          # print the plan and run nothing (anywhere)
#   bash benchmarks/gpu.sh --skip-install --allow-cpu --quick   # the script itself, off-GPU
# Every step has a time limit, and all together at most BUDGET seconds (default 560), so
# that a call of the device tool (600 s at most) returns with $OUT filled.
# On the device tool: run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=570).
# Environment: OUT (results folder), PYTHON (default python3), SITE (where the wheels are
# installed; default /tmp/lucid-gpu-site), BUDGET (seconds for all the steps).

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${OUT:-/tmp/lucid-gpu}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/lucid-gpu-site}
WHL=$ROOT/.whl

DEADLINE=$((SECONDS + ${BUDGET:-560}))

DRY_RUN=0 QUICK=0 ALLOW_CPU=0 SKIP_INSTALL=0 SKIP_TESTS=0 SKIP_BENCH=0 SKIP_CHECK=0 SECTIONS=""
usage() { sed -n '/^# Usage:/,/^# installed/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --quick) QUICK=1 ;;
        --allow-cpu) ALLOW_CPU=1 ;;
        --skip-install) SKIP_INSTALL=1 ;;
        --skip-tests) SKIP_TESTS=1 ;;
        --skip-bench) SKIP_BENCH=1 ;;
        --skip-check) SKIP_CHECK=1 ;;
        --sections)
            [[ $# -ge 2 ]] || { echo "gpu.sh: --sections needs a value" >&2; exit 2; }
            SECTIONS=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

FAILED=()
SUMMARY=()

# step NAME SECONDS COMMAND...: run with a time limit (and within BUDGET), log the
# outcome; returns the command's status
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS - 5))
    ((left < limit)) && limit=$left
    echo
    echo "=== $name (limit ${limit}s) ==="
    echo "+ $*"
    if [[ $DRY_RUN == 1 ]]; then
        SUMMARY+=("$name: not run (dry run)")
        return 0
    fi
    if ((limit < 10)); then
        SUMMARY+=("$name: SKIPPED, BUDGET spent")
        FAILED+=("$name (no time left)")
        return 124
    fi
    local t0=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    local took=$((SECONDS - t0))
    if [[ $rc == 0 ]]; then
        SUMMARY+=("$name: ok (${took}s)")
    else
        [[ $rc == 124 || $rc == 137 ]] && name="$name (timed out)"
        SUMMARY+=("$name: FAILED, exit $rc (${took}s)")
        FAILED+=("$name")
    fi
    return $rc
}

TEE_PID=""
if [[ $DRY_RUN == 0 ]]; then
    mkdir -p "$OUT_DIR"
    exec > >(tee -a "$OUT_DIR/gpu.log") 2>&1
    TEE_PID=$!
fi
# finish STATUS: let tee write the log's last lines before the device tool collects $OUT
finish() {
    if [[ -n $TEE_PID ]]; then
        exec 1>&- 2>&-
        wait "$TEE_PID" 2>/dev/null
    fi
    exit "$1"
}
cd "$ROOT" || finish 2
echo "gpu.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), root $ROOT, results in $OUT_DIR"
[[ $DRY_RUN == 1 ]] && echo "gpu.sh: dry run: the commands are printed, none is run"

# --------------------------------------------------------------------- 1. MLX with CUDA
if [[ $DRY_RUN == 0 ]]; then
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader
    "$PY" --version
    for tool in ncu nsys nvcc; do echo "$tool: $(command -v $tool || echo 'not on PATH')"; done
fi
if [[ -z ${CUDA_HOME:-} && -d /usr/local/cuda ]]; then
    export CUDA_HOME=/usr/local/cuda # MLX's JIT (NVRTC) looks for CUDA's headers here
fi

if [[ $SKIP_INSTALL == 0 ]]; then
    shopt -s nullglob
    wheels=("$WHL"/*.whl)
    mlx_wheels=("$WHL"/mlx-[0-9]*.whl)
    cuda_wheels=("$WHL"/mlx_cuda_13-*.whl)
    shopt -u nullglob
    if [[ ${#mlx_wheels[@]} != 1 || ${#cuda_wheels[@]} != 1 ]]; then
        echo "gpu.sh: need exactly one mlx-*.whl and one mlx_cuda_13-*.whl in $WHL;" \
            "found: ${wheels[*]:-none} (see the pip download command at the top)" >&2
        [[ $DRY_RUN == 1 ]] || finish 2
        wheels=("$WHL/mlx-0.32.4-cp312-cp312-manylinux_2_35_x86_64.whl"
            "$WHL/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl")
    fi
    step "install the wheels" 150 "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" || finish 2
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# The CUDA libraries live in the image's site-packages (nvidia/.../lib), not next to the
# wheels installed in $SITE, so MLX's relative RPATH does not reach them.
find_nvidia_libs() {
    "$PY" - <<'PY'
import glob, os, site
dirs = set()
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
}
if [[ $DRY_RUN == 0 ]]; then
    libs=$(find_nvidia_libs)
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH gets $(tr ':' '\n' <<<"$libs" | grep -c .) nvidia library folders"
fi

if ! step "MLX on the GPU" 120 "$PY" benchmarks/gpu_check.py --verify; then
    [[ $ALLOW_CPU == 1 ]] || finish 2
    echo "gpu.sh: --allow-cpu: going on without a GPU (this checks the script, not the GPU)"
fi

# --------------------------------------------------------------------------- 2. tests
if [[ $SKIP_TESTS == 0 ]]; then
    step "compiled-path tests" 150 "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_fast_paths.py tests/test_compile_active.py tests/test_adagrad.py
fi

# ----------------------------------------------------------------------- 3. benchmarks
if [[ $SKIP_BENCH == 0 ]]; then
    bench=(benchmarks/run.py --out "$OUT_DIR/RESULTS-gpu.md" --json "$OUT_DIR/RESULTS-gpu.json")
    [[ $QUICK == 1 ]] && bench+=(--quick)
    [[ -n $SECTIONS ]] && bench+=(--section "$SECTIONS")
    step "benchmarks (run.py)" 360 "$PY" "${bench[@]}"
fi

# --------------------------------------------------------- 4. bandwidth and launch count
if [[ $SKIP_CHECK == 0 ]]; then
    check=(benchmarks/gpu_check.py --out "$OUT_DIR/gpu-check.md" --json "$OUT_DIR/gpu-check.json")
    [[ $QUICK == 1 ]] && check+=(--quick --tensors 1,16)
    step "bandwidth and kernels per step (gpu_check.py)" 180 "$PY" "${check[@]}"
fi

echo
echo "=== summary ==="
printf '  %s\n' "${SUMMARY[@]}"
[[ $DRY_RUN == 0 && -f $OUT_DIR/gpu-check.md ]] && grep -E "^Target|^Counted|^Not counted" \
    "$OUT_DIR/gpu-check.md"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "gpu.sh: failed: ${FAILED[*]}"
    finish 1
fi
finish 0
