#!/usr/bin/env bash
# What a session with a GPU runs (on one H100, 2026-11-26: 346 s for all parts but the grid,
# whose 12 nets then took over 360 s, hence T = 4 now):
#   bash bench/gpu_check.sh          the CUDA tests, bench_training (fp32 and --bf16), bench_inference and
#                                    bench_selection on CUDA, DIAM_qp at paper scale on CUDA (then at n = 3,000
#                                    beside its OSQP route and the dense route), then iteration 0 of 4 nets at
#                                    the paper preset on Fashion-MNIST through run_grid.py; writes
#                                    bench/RESULTS_gpu.txt
#   bash bench/gpu_check.sh --dry    the same parts at toy size on the CPU, in a few seconds each (the test
#                                    suite runs this); writes to a temporary file unless --out is given
#   --out FILE                       where the results go
#   --only PART[,PART]               run only these parts (machine, tests, training, inference, selection,
#                                    diam_qp, grid), e.g. to rerun one that failed or ran out of time; adds to FILE
# Each part has a time limit; the check stops at the first part that fails or runs out of time,
# and says which. Fashion-MNIST is read from $DIAM_DATA_ROOT, else the first of ./data,
# ./shared/datasets and ../shared/datasets that holds FashionMNIST/raw (the four files, .gz or not).
# GPUS_PER_TRAIN (default 0.25: four nets train at once on the GPU) and THREADS_PER_TRAIN (default 2)
# size run_grid.py's workers.
set -euo pipefail
cd "$(dirname "$0")/.."

PARTS="machine tests training inference selection diam_qp grid"
DRY=0
OUT=""
ONLY=$PARTS
usage() { echo "usage: bash bench/gpu_check.sh [--dry] [--out FILE] [--only PART[,PART]]  (parts: $PARTS)" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry) DRY=1 ;;
        --out) OUT=${2:-}; [ -n "$OUT" ] || usage; shift ;;
        --only) ONLY=${2:-}; [ -n "$ONLY" ] || usage; ONLY=${ONLY//,/ }; shift ;;
        *) usage ;;
    esac
    shift
done
for key in $ONLY; do [[ " $PARTS " == *" $key "* ]] || usage; done
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
PYTHON=${PYTHON:-python}

say() { echo "$*" | tee -a "$OUT"; }

part() {  # part KEY NAME SECONDS COMMAND...: run it with a time limit, its output into $OUT too
    local key=$1 name=$2 limit=$3 start rc=0
    shift 3
    wanted "$key" || return 0
    say ""
    say "=== $name (limit ${limit} s)"
    say "\$ $*"
    start=$(date +%s)
    # SIGINT first: run_grid.py then stops its Ray cleanly; SIGKILL 30 s later if it has not.
    timeout -s INT -k 30 "$limit" "$@" 2>&1 | tee -a "$OUT" || rc=$?
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            say "FAILED: $name ran out of its ${limit} s"
        else
            say "FAILED: $name exited with $rc"
        fi
        say "gpu_check.sh stopped after $(( $(date +%s) - BEGAN )) s; results so far in $OUT"
        exit 1
    fi
    say "--- $name: $(( $(date +%s) - start )) s"
}

if [ "$DRY" -eq 1 ]; then
    DEVICE=cpu
    DATA_ROOT=""
else
    DEVICE=cuda
    DATA_ROOT=${DIAM_DATA_ROOT:-}
    if [ -z "$DATA_ROOT" ]; then
        for root in data shared/datasets ../shared/datasets; do
            if [ -d "$root/FashionMNIST/raw" ]; then DATA_ROOT=$root; break; fi
        done
    fi
    if [ -z "$DATA_ROOT" ]; then
        echo "error: no Fashion-MNIST found: set DIAM_DATA_ROOT to a folder holding FashionMNIST/raw" \
             "(the four *-ubyte files, .gz or not), or put them in ./data/FashionMNIST/raw." >&2
        exit 2
    fi
    export DIAM_DATA_ROOT=$DATA_ROOT
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -z "$OUT" ]; then
    if [ "$DRY" -eq 1 ]; then OUT=$(mktemp "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX"); else OUT=bench/RESULTS_gpu.txt; fi
fi
[ "$ONLY" != "$PARTS" ] || : > "$OUT"  # a rerun of some parts adds to the results of the others
BEGAN=$(date +%s)

say "gpu_check.sh$([ "$DRY" -eq 1 ] && echo ' --dry') (parts: $ONLY): $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "data root: ${DATA_ROOT:-(digits only)}"
part machine "machine" 60 "$PYTHON" -c "
import os, torch
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs')
if '$DEVICE' == 'cuda':
    assert torch.cuda.is_available(), 'PyTorch sees no GPU'
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f'GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB')
"

# The suite's tests that need CUDA, named so (on the CPU they are skipped; on a GPU a skip is a failure).
# Only the files that mention CUDA are collected: the others cannot hold such a test.
mapfile -t CUDA_FILES < <(grep -lis cuda tests/test_*.py)
LINES_BEFORE=$(wc -l < "$OUT")
part tests "CUDA tests" 120 "$PYTHON" -m pytest -q -rs -p no:cacheprovider -k cuda "${CUDA_FILES[@]}"
if wanted tests && [ "$DRY" -eq 0 ] && tail -n +"$((LINES_BEFORE + 1))" "$OUT" | grep -q "^SKIPPED"; then
    say "FAILED: a CUDA test was skipped on the GPU machine"
    exit 1
fi

if [ "$DRY" -eq 1 ]; then
    TRAINING=(--device cpu --nets 0 --sizes quick --batch 8 --steps 1 --warmup 0 --workers 0 --aug_repeats 1)
    INFERENCE=(--device cpu --nets 7 --pool 20 --batch 10 --query 5 --repeats 1)
    SELECTION=(--device cpu --unlabeled 400 --labeled 40 --dim 16 --models 2 --snapshots 2 --batch 20
               --repeats 1 --strategies coreset --alipy-unlabeled 0)
    DIAM_QP=(--device cpu --unlabeled 2000 --labeled 40 --dim 16 --models 2 --snapshots 2 --batch 40
             --strategies DIAM_qp --alipy-unlabeled 0 --dense-unlabeled 0)
    GRID=(--preset quick --datasets digits --model_nums 2 --methods random --al_iters 1 --epochs 1
          --initial_labeled 40 --pool_size 300 --test_size 100 --num_cpus 2)
else
    TRAINING=(--device cuda --steps 12)  # GPU steps are short: more of them, so a starved DataLoader shows
    INFERENCE=(--device cuda --repeats 2)
    # alipy's baselines run on the CPU and were measured there already.
    SELECTION=(--device cuda --alipy-unlabeled 0)
    # k-NN and the float64 eigendecomposition on the GPU, the QP on the CPU; the target is <= 60 s at
    # U = 57,000 (n = 11,400). At n = 3,000 the OSQP route and the authors' dense route check the picks.
    DIAM_QP=(--device cuda --strategies DIAM_qp --alipy-unlabeled 0 --dense-unlabeled 15000)
    GRID=(--preset paper --datasets fmnist --model_nums 4 --methods random --al_iters 1
          --gpus_per_train "${GPUS_PER_TRAIN:-0.25}" --threads_per_train "${THREADS_PER_TRAIN:-2}")
fi
part training "bench_training, fp32" 120 "$PYTHON" bench/bench_training.py "${TRAINING[@]}"
part training "bench_training, bf16" 120 "$PYTHON" bench/bench_training.py "${TRAINING[@]}" --bf16
part inference "bench_inference" 150 "$PYTHON" bench/bench_inference.py "${INFERENCE[@]}"
part selection "bench_selection" 120 "$PYTHON" bench/bench_selection.py "${SELECTION[@]}"
part diam_qp "bench_selection, DIAM_qp" 300 "$PYTHON" bench/bench_selection.py "${DIAM_QP[@]}"
# Iteration 0 only (--al_iters 1): the nets train, then one test of all of them. T = 4 is one wave of
# four GPU-sharing workers; the 12 nets took over 360 s on an H100 (7 of 13 steps in 345 s).
part grid "run_grid.py, iteration 0" 360 "$PYTHON" run_grid.py "${GRID[@]}" --work_dir "$WORK/runs"
say ""
say "gpu_check.sh: all parts passed in $(( $(date +%s) - BEGAN )) s; results in $OUT"
