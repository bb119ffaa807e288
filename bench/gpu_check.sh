#!/usr/bin/env bash
# The GPU check: one call of at most 10 minutes on a lent GPU machine answers issue 22's headline
# (iteration 0 of the paper, 12 nets, in <= 180 s?), writing each figure to the results as soon as
# it is known, so that a call killed part way still reports. Procedure (docs/gpu.md):
#   bash bench/gpu_carry.sh             here, first: gpu_carry/ holds the wheels the device lacks and
#                                       Fashion-MNIST (about 32 MiB; the call carries it)
#   bash bench/gpu_check.sh             there, in one call (run(..., carry=["gpu_carry"], timeout_s=600));
#                                       results in $OUT/RESULTS_gpu.txt when $OUT is a folder (the device
#                                       call's), else bench/RESULTS_gpu.txt
#   bash bench/gpu_check.sh --dry       every part at toy size on the CPU, in seconds each (the suite runs
#                                       this); writes to a temporary file unless --out is given
#   --out FILE                          where the results go
#   --only PART[,PART]                  only these parts, added to FILE (to rerun one)
#   --budget SECONDS                    the whole check's time (default 570: the call's 600 s less a margin)
# Parts, most important first; each runs under min(its own limit, what is left of the budget), a part
# that cannot get 20 s is skipped and says so, and a failed part is reported and the check goes on:
#   machine    python/torch/CUDA/cuDNN versions, the GPU, whether each CUDA piece works (bench/gpu_probe.py)
#   iteration  iteration 0 at the paper's settings on Fashion-MNIST, T = 12, in one process, each phase
#              timed (train, its snapshot scoring, test, DIAM/CAL/entropy selection), capped at 300 s; then
#              bf16's label flips against fp32 without TF32 and DIAM's picks (bench/gpu_iteration.py).
#              DIAM_CUDA_FAST for it: $HEADLINE_FAST if set, else the pieces the machine part found working
#   scoring    per net, pool-pass images/s: plain, fused, fused + CUDA graphs at batch 500, then fused
#              and graphs at batch 2000 (bench/bench_inference.py)
#   steps      per net, ms per training step: eager vs graphed (bench/bench_step.py)
#   tests      the suite's CUDA tests (pytest -k cuda; a skip there is a failure)
#   diam_qp    DIAM_qp at paper scale on CUDA, then at n = 3,000 beside its OSQP route and the dense route
#              (bench/bench_selection.py); last, so in one call it gets what is left: rerun it with --only diam_qp
# Wheels in gpu_carry/wheels are installed with pip --target into gpu_carry/site (on PYTHONPATH) for the
# modules that do not import. Fashion-MNIST is read from $DIAM_DATA_ROOT, else the first of gpu_carry,
# ./data and ./shared/datasets that holds FashionMNIST/raw (folders of the project: a data root
# beside it is named by DIAM_DATA_ROOT). Paths in the results are relative to the project.
set -uo pipefail
cd "$(dirname "$0")/.."

PARTS="machine iteration scoring steps tests diam_qp"
DRY=0
RESULTS=""
ONLY=$PARTS
BUDGET=570
usage() {
    echo "usage: bash bench/gpu_check.sh [--dry] [--out FILE] [--only PART[,PART]] [--budget SECONDS]  (parts: $PARTS)" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry) DRY=1 ;;
        --out) RESULTS=${2:-}; [ -n "$RESULTS" ] || usage; shift ;;
        --only) ONLY=${2:-}; [ -n "$ONLY" ] || usage; ONLY=${ONLY//,/ }; shift ;;
        --budget) BUDGET=${2:-}; [[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || usage; shift ;;
        *) usage ;;
    esac
    shift
done
for key in $ONLY; do [[ " $PARTS " == *" $key "* ]] || usage; done
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
BEGAN=$(date +%s)

if [ -z "$RESULTS" ]; then
    if [ "$DRY" -eq 1 ]; then
        RESULTS=$(mktemp "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")
    elif [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
        RESULTS=$OUT/RESULTS_gpu.txt
    else
        RESULTS=bench/RESULTS_gpu.txt
    fi
fi
[ "$ONLY" != "$PARTS" ] || : > "$RESULTS"  # a rerun of some parts adds to the results of the others
say() { echo "$*" | tee -a "$RESULTS"; }
# A path as the results show it: relative to the project, a file of the device call's folder as
# $OUT/..., a temporary one (a dry run's) as it is.
shown() {
    if [ -n "${OUT:-}" ] && [[ "$1" == "$OUT"/* ]]; then
        echo "\$OUT/${1#"$OUT"/}"
    elif [[ "$1" == /* && "$1" != "${TMPDIR:-/tmp}"/* ]]; then
        realpath -m -s --relative-to=. -- "$1"
    else
        echo "$1"
    fi
}

FAILED=()
part() {  # part KEY NAME LIMIT COMMAND...: run it under min(LIMIT, what is left), its output into the results
    local key=$1 name=$2 limit=$3 start rc=0 left
    shift 3
    wanted "$key" || return 0
    left=$(( BUDGET - ($(date +%s) - BEGAN) ))
    say ""
    if [ "$left" -lt 20 ]; then
        say "=== $name: SKIPPED, ${left} s of the ${BUDGET} s budget left"
        FAILED+=("$name (skipped)")
        return 0
    fi
    [ "$limit" -le "$left" ] || limit=$left
    say "=== $name (limit ${limit} s)"
    say "\$ $*"
    start=$(date +%s)
    timeout -s INT -k 15 "$limit" "$@" 2>&1 | tee -a "$RESULTS" || rc=$?
    if [ "$rc" -eq 0 ]; then
        say "--- $name: $(( $(date +%s) - start )) s"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || [ "$rc" -eq 130 ]; then
        say "FAILED: $name ran out of its ${limit} s"
        FAILED+=("$name")
    else
        say "FAILED: $name exited with $rc"
        FAILED+=("$name")
    fi
}

if [ "$DRY" -eq 1 ]; then
    DEVICE=cpu
    DATA_ROOT=""
else
    DEVICE=cuda
    DATA_ROOT=${DIAM_DATA_ROOT:-}
    if [ -z "$DATA_ROOT" ]; then
        for root in gpu_carry data shared/datasets; do
            if [ -d "$root/FashionMNIST/raw" ]; then DATA_ROOT=$root; break; fi
        done
    fi
    if [ -z "$DATA_ROOT" ]; then
        echo "error: no Fashion-MNIST found: run bash bench/gpu_carry.sh here first and carry gpu_carry/, or set" \
             "DIAM_DATA_ROOT to a folder holding FashionMNIST/raw (the four *-ubyte files, .gz or not)." >&2
        exit 2
    fi
    export DIAM_DATA_ROOT=$DATA_ROOT
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say "gpu_check.sh$([ "$DRY" -eq 1 ] && echo ' --dry') (parts: $ONLY): $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), budget ${BUDGET} s"
say "data root: $(shown "${DATA_ROOT:-(digits only)}")"

# Carried wheels, for the modules this machine lacks.
if [ -d gpu_carry/wheels ]; then
    missing=()
    for module in ofa qpsolvers osqp; do
        PYTHONPATH="$PWD/gpu_carry/site${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "import $module" 2>/dev/null \
            || missing+=("$module")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing carried wheels for: ${missing[*]} (and osqp's jinja2/joblib where absent)"
        wheels=()
        for module in "${missing[@]}"; do wheels+=(gpu_carry/wheels/"$module"-*.whl); done
        for module in jinja2 joblib; do
            "$PYTHON" -c "import $module" 2>/dev/null || wheels+=(gpu_carry/wheels/"$module"-*.whl)
        done
        "$PYTHON" -m pip install --quiet --no-index --no-deps --target gpu_carry/site "${wheels[@]}" 2>&1 \
            | tee -a "$RESULTS" || say "FAILED: installing the carried wheels"
    fi
    export PYTHONPATH="$PWD/gpu_carry/site${PYTHONPATH:+:$PYTHONPATH}"
fi

PROBE_LOG=$WORK/probe.txt
part machine "machine and APIs" 150 bash -o pipefail -c "'$PYTHON' bench/gpu_probe.py --device $DEVICE | tee '$PROBE_LOG'"

if [ "$DRY" -eq 1 ]; then
    ITERATION=(--device cpu --dataset digits --preset quick --model_num 2 --epochs 2 --pool_size 300
               --initial_labeled 40 --test_size 100 --query_batch 20 --bf16_pool 50)
    SCORING=(--device cpu --nets 7 --pool 20 --batch 10 --query 5 --repeats 1 --image_size 32)
    BIG_BATCH=(--device cpu --nets 7 --pool 40 --batch 40 --query 5 --repeats 1 --image_size 32 --forwards fused)
    STEPS=(--device cpu --nets 7 --steps 1 --batch 8 --image_size 32)
    DIAM_QP=(--device cpu --unlabeled 2000 --labeled 40 --dim 16 --models 2 --snapshots 2 --batch 40
             --strategies DIAM_qp --alipy-unlabeled 0 --dense-unlabeled 0)
else
    ITERATION=(--device cuda --dataset fmnist --preset paper --model_num 12 --cap 300 --target 180 --bf16_pool 5000)
    SCORING=(--device cuda --pool 10000 --repeats 1)
    BIG_BATCH=(--device cuda --pool 10000 --repeats 1 --batch 2000 --forwards fused graphs)
    STEPS=(--device cuda --steps 20)
    # k-NN and the float64 eigendecomposition on the GPU, the QP on the CPU; the target is <= 60 s at
    # U = 57,000 (n = 11,400). At n = 3,000 the OSQP route and the authors' dense route check the picks.
    DIAM_QP=(--device cuda --strategies DIAM_qp --alipy-unlabeled 0 --dense-unlabeled 15000)
fi
if [ -n "${HEADLINE_FAST+set}" ]; then
    FAST=$HEADLINE_FAST
elif [ -f "$PROBE_LOG" ]; then
    FAST=$(sed -n 's/^pieces that work: //p' "$PROBE_LOG" | tail -1)
else
    FAST=""
fi
say ""
say "DIAM_CUDA_FAST for the iteration: '${FAST}'"
# The cap applies to the iteration; the bf16 check after it needs up to 120 s more.
part iteration "iteration 0 in one process" 450 \
    env DIAM_CUDA_FAST="$FAST" "$PYTHON" bench/gpu_iteration.py "${ITERATION[@]}" --work_dir "$WORK/runs"
part scoring "scoring images/s: plain, fused, graphs" 120 "$PYTHON" bench/bench_inference.py "${SCORING[@]}"
# A larger forward batch (DIAM_SCORING_BATCH) for the same passes.
part scoring "scoring images/s at a larger batch" 90 "$PYTHON" bench/bench_inference.py "${BIG_BATCH[@]}"
part steps "training step ms: eager, graphed" 100 "$PYTHON" bench/bench_step.py "${STEPS[@]}"

# The suite's tests that need CUDA, named so (on the CPU they are skipped; on a GPU a skip is a failure).
mapfile -t CUDA_FILES < <(grep -lis cuda tests/test_*.py)
LINES_BEFORE=$(wc -l < "$RESULTS")
part tests "CUDA tests" 150 "$PYTHON" -m pytest -q -rs -p no:cacheprovider -k cuda "${CUDA_FILES[@]}"
if wanted tests && [ "$DRY" -eq 0 ] && tail -n +"$((LINES_BEFORE + 1))" "$RESULTS" | grep -q "^SKIPPED"; then
    say "FAILED: a CUDA test was skipped on the GPU machine"
    FAILED+=("CUDA tests (a skip)")
fi
part diam_qp "bench_selection, DIAM_qp" 300 "$PYTHON" bench/bench_selection.py "${DIAM_QP[@]}"

say ""
if [ ${#FAILED[@]} -eq 0 ]; then
    say "gpu_check.sh: all parts passed in $(( $(date +%s) - BEGAN )) s; results in $(shown "$RESULTS")"
else
    say "gpu_check.sh: $(( $(date +%s) - BEGAN )) s; did not pass: $(IFS=';'; echo "${FAILED[*]}"); results in $(shown "$RESULTS")"
    exit 1
fi
