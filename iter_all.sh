#!/usr/bin/env bash
# Run the whole experiment for T target models, as the paper's loop did:
#   bash iter_all.sh GPU_ID T          (GPU_ID: a CUDA device number, or cpu)
# For every dataset: train iteration 0 of nets 0..T-1 once (shared by all methods);
# then for every method and iteration: train (after iteration 0), test, select the next batch.
# Narrow the run with space-separated lists in the environment:
#   PRESET (paper), DATASETS ("mnist kmnist"), METHODS (all seven), ITERS (every iteration of the preset),
#   SEEDS ("0": the repeats to run, each with its own initial split, training streams and selections)
# e.g. PRESET=quick DATASETS=digits bash iter_all.sh cpu 2
#      SEEDS="0 1 2" PRESET=quick DATASETS=digits METHODS="random DIAM" bash iter_all.sh cpu 2
# Every step skips work whose outputs exist, so running the same command again after
# an interruption continues where it stopped. The loop stops at the first failing step.
# Extra flags for every script go in EXTRA_ARGS (e.g. "--epochs 5 --work_dir runs2"); not those the loop
# gives each step from the variables above (--dataset, --method, --al_iter, --model_num, --seed).
# Training the T nets of an iteration at once, in several train_net.py processes:
#   PARALLEL=k              k processes per device (default 1: one process trains the nets in turn)
#   bash iter_all.sh 0,1 T  spread the nets over several GPUs (PARALLEL processes on each)
# Nets are dealt to the processes in turn (net n to process n mod their number); every net is
# seeded by itself, so with the same threads per process the files are those of one process.
# Each process's output is shown when it ends. On the CPU each process gets an equal share of
# the cores (OMP_NUM_THREADS, unless it is set). Testing and selecting run on the first device.
# DRY_RUN=1 prints the steps as a bash script instead of running them (processes that run at once end
# in '&', then 'wait'). The steps are those of diam/plan.py, which run_grid.py runs: a test holds the two equal.
set -euo pipefail
cd "$(dirname "$0")"
# Ctrl-C stops the loop after the running step, even when that step was already exiting
# (Python then swallows the interrupt, exits 0, and bash alone would go on to the next step).
WORKERS=()  # train_net.py processes running in the background (PARALLEL)
LOG_DIR=""
stop_workers() {  # background processes ignore Ctrl-C, so they are stopped here
    if [ ${#WORKERS[@]} -gt 0 ]; then
        kill "${WORKERS[@]}" 2>/dev/null || true
        wait "${WORKERS[@]}" 2>/dev/null || true
    fi
}
trap 'stop_workers; echo "iter_all.sh: interrupted; run the same command again to continue." >&2; exit 130' INT
trap 'stop_workers; exit 143' TERM
trap '[ -z "$LOG_DIR" ] || rm -rf "$LOG_DIR"' EXIT

if [ $# -ne 2 ]; then
    echo "usage: bash iter_all.sh GPU_ID T   (GPU_ID: a CUDA device number, several as 0,1, or 'cpu';" \
         "T: the number of target models)" >&2
    exit 2
fi
GPU_ID=$1
T=$2
PARALLEL=${PARALLEL:-1}
# How many T may be is checked with the rest below, where --nets in EXTRA_ARGS is known.
if ! [[ "$T" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: T must be a number of target models (1 or more), got '$T'." >&2
    exit 2
fi
if ! [[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: PARALLEL must be a positive number of training processes per device, got '$PARALLEL'." >&2
    exit 2
fi
if [ "$GPU_ID" = cpu ]; then
    DEVICE=cpu
    GPUS=()
elif [[ "$GPU_ID" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    IFS=, read -r -a GPUS <<< "$GPU_ID"
    # Each process sees one GPU as "cuda"; testing and selecting use the first.
    export CUDA_VISIBLE_DEVICES=${GPUS[0]}
    DEVICE=cuda
else
    echo "error: GPU_ID must be a CUDA device number, a list of them such as 0,1, or 'cpu'; got '$GPU_ID'." >&2
    exit 2
fi

PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
PRESET=${PRESET:-paper}
SEEDS=${SEEDS:-0}
for S in $SEEDS; do
    if ! [[ "$S" =~ ^[0-9]+$ ]]; then
        echo "error: SEEDS must be repeat indices (0, 1, 2, ...) separated by spaces, got '$SEEDS'." >&2
        exit 2
    fi
done
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
# T, every name in DATASETS and METHODS, ITERS, PRESET and EXTRA_ARGS are checked before the first step,
# by the steps' own flags and the loop's checks (diam/cli.py iter_all_plan, diam/plan.py; a mistake is one
# paragraph and exit 2). It answers the last iteration of the preset (with any --al_iters override), then the
# datasets and methods to run: the paper's, and its seven methods, where DATASETS or METHODS is empty.
PLAN=$("$PYTHON" -c "
import sys
from diam.cli import iter_all_plan
from diam.errors import run_cli
run_cli(lambda: print(iter_all_plan(sys.argv[1:])))" "$T" "${DATASETS:-}" "${METHODS:-}" "${ITERS:-}" \
    --preset "$PRESET" "${EXTRA[@]}") || exit
{ read -r LAST_ITER; read -r DATASETS; read -r METHODS; } <<< "$PLAN"
ITERS=${ITERS:-$(seq -s ' ' 0 "$LAST_ITER")}
NETS=$(seq -s ' ' 0 $((T - 1)))
COMMON=(--preset "$PRESET" --model_num "$T" --device "$DEVICE" "${EXTRA[@]}")
N_DEVICES=$(( ${#GPUS[@]} > 0 ? ${#GPUS[@]} : 1 ))
N_WORKERS=$(( N_DEVICES * PARALLEL < T ? N_DEVICES * PARALLEL : T ))
# An equal share of the cores for each CPU training process, unless OMP_NUM_THREADS says otherwise.
CPU_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / N_WORKERS > 0 ? $(nproc) / N_WORKERS : 1 ))}

dry_run() { [ "$DRY_RUN" != 0 ]; }

show() {  # a command as one line of bash
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
}

step() {  # run one step; on failure name it and stop the loop
    if dry_run; then
        show "$PYTHON" "$@"
        return
    fi
    if ! "$PYTHON" "$@"; then
        echo "iter_all.sh: step failed: $PYTHON $*" >&2
        exit 1
    fi
}

wanted() { [[ " $ITERS " == *" $1 "* ]]; }

train_nets() {  # train nets 0..T-1 of one iteration ("$@": --dataset ... --al_iter ...)
    if [ "$N_WORKERS" -eq 1 ]; then
        # shellcheck disable=SC2086
        step train_net.py "$@" --net_id $NETS "${COMMON[@]}"
        return
    fi
    dry_run || [ -n "$LOG_DIR" ] || LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/iter_all.XXXXXX")
    local w nets place where logs=() names=() failed=0
    WORKERS=()
    for ((w = 0; w < N_WORKERS; w++)); do
        nets=$(seq -s ' ' "$w" "$N_WORKERS" $((T - 1)))
        logs+=("$LOG_DIR/train$w.log")
        if [ "$DEVICE" = cpu ]; then
            place=("OMP_NUM_THREADS=$CPU_THREADS")
            where="cpu, $CPU_THREADS thread(s)"
        else
            place=("CUDA_VISIBLE_DEVICES=${GPUS[w % N_DEVICES]}")
            where="GPU ${GPUS[w % N_DEVICES]}"
        fi
        if dry_run; then
            # shellcheck disable=SC2086
            echo "$(show "${place[@]}" "$PYTHON" train_net.py "$@" --net_id $nets "${COMMON[@]}") &"
            continue
        fi
        # shellcheck disable=SC2086
        env "${place[@]}" "$PYTHON" train_net.py "$@" --net_id $nets "${COMMON[@]}" > "${logs[w]}" 2>&1 &
        WORKERS+=($!)
        names+=("train_net.py $* --net_id $nets")
        echo "iter_all.sh: training nets $nets on $where"
    done
    if dry_run; then
        echo wait
        return
    fi
    for ((w = 0; w < N_WORKERS; w++)); do
        if wait "${WORKERS[w]}"; then
            cat "${logs[w]}"
        else
            cat "${logs[w]}" >&2
            echo "iter_all.sh: step failed: $PYTHON ${names[w]}" >&2
            failed=1
        fi
    done
    WORKERS=()
    [ "$failed" -eq 0 ] || exit 1
}

BASE=("${COMMON[@]}")
for S in $SEEDS; do
    COMMON=("${BASE[@]}" --seed "$S")
    for D in $DATASETS; do
        train_nets --dataset "$D" --al_iter 0
        for M in $METHODS; do
            for I in $ITERS; do
                if [ "$I" -gt 0 ]; then
                    train_nets --dataset "$D" --method "$M" --al_iter "$I"
                fi
                step test_multi_models.py --dataset "$D" --method "$M" --al_iter "$I" "${COMMON[@]}"
                if [ "$I" -lt "$LAST_ITER" ] && wanted $((I + 1)); then
                    step al_select.py --dataset "$D" --method "$M" --al_iter "$I" "${COMMON[@]}"
                fi
            done
        done
    done
done
dry_run || echo "iter_all.sh: done. Results: table.py --results <work_dir>/$PRESET/extracted_results"
