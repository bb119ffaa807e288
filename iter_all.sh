#!/usr/bin/env bash
# Run the whole experiment for T target models, as the paper's loop did:
#   bash iter_all.sh GPU_ID T          (GPU_ID: a CUDA device number, or cpu)
# For every dataset: train iteration 0 of nets 0..T-1 once (shared by all methods);
# then for every method and iteration: train (after iteration 0), test, select the next batch.
# Narrow the run with space-separated lists in the environment:
#   PRESET (paper), DATASETS ("mnist kmnist"), METHODS (all seven), ITERS (every iteration of the preset)
# e.g. PRESET=quick DATASETS=digits bash iter_all.sh cpu 2
# Every step skips work whose outputs exist, so running the same command again after
# an interruption continues where it stopped. The loop stops at the first failing step.
# Extra flags for every script go in EXTRA_ARGS (e.g. "--epochs 5 --work_dir runs2").
set -euo pipefail
cd "$(dirname "$0")"
# Ctrl-C stops the loop after the running step, even when that step was already exiting
# (Python then swallows the interrupt, exits 0, and bash alone would go on to the next step).
trap 'echo "iter_all.sh: interrupted; run the same command again to continue." >&2; exit 130' INT

if [ $# -ne 2 ]; then
    echo "usage: bash iter_all.sh GPU_ID T   (GPU_ID: a CUDA device number or 'cpu'; T: 1..12 target models)" >&2
    exit 2
fi
GPU_ID=$1
T=$2
if ! [[ "$T" =~ ^[0-9]+$ ]] || [ "$T" -lt 1 ] || [ "$T" -gt 12 ]; then
    echo "error: T must be a number of target models between 1 and 12, got '$T'." >&2
    exit 2
fi
if [ "$GPU_ID" = cpu ]; then
    DEVICE=cpu
elif [[ "$GPU_ID" =~ ^[0-9]+$ ]]; then
    export CUDA_VISIBLE_DEVICES=$GPU_ID
    DEVICE=cuda
else
    echo "error: GPU_ID must be a CUDA device number or 'cpu', got '$GPU_ID'." >&2
    exit 2
fi

PYTHON=${PYTHON:-python}
PRESET=${PRESET:-paper}
DATASETS=${DATASETS:-"mnist kmnist"}
METHODS=${METHODS:-"random least_conf margin entropy coreset CAL DIAM"}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
# The preset (with any --al_iters override) knows how many iterations there are.
LAST_ITER=$("$PYTHON" -c "
import argparse, sys
from diam.presets import add_preset_arguments, preset_from_args
p = argparse.ArgumentParser(); add_preset_arguments(p)
args, _ = p.parse_known_args(sys.argv[1:])
print(preset_from_args(args).al_iters - 1)" --preset "$PRESET" "${EXTRA[@]}")
ITERS=${ITERS:-$(seq -s ' ' 0 "$LAST_ITER")}
NETS=$(seq -s ' ' 0 $((T - 1)))
COMMON=(--preset "$PRESET" --model_num "$T" --device "$DEVICE" "${EXTRA[@]}")

step() {  # run one step; on failure name it and stop the loop
    if ! "$PYTHON" "$@"; then
        echo "iter_all.sh: step failed: $PYTHON $*" >&2
        exit 1
    fi
}

wanted() { [[ " $ITERS " == *" $1 "* ]]; }

for D in $DATASETS; do
    # shellcheck disable=SC2086
    step train_net.py --dataset "$D" --al_iter 0 --net_id $NETS "${COMMON[@]}"
    for M in $METHODS; do
        for I in $ITERS; do
            if [ "$I" -gt 0 ]; then
                # shellcheck disable=SC2086
                step train_net.py --dataset "$D" --method "$M" --al_iter "$I" --net_id $NETS "${COMMON[@]}"
            fi
            step test_multi_models.py --dataset "$D" --method "$M" --al_iter "$I" "${COMMON[@]}"
            if [ "$I" -lt "$LAST_ITER" ] && wanted $((I + 1)); then
                step al_select.py --dataset "$D" --method "$M" --al_iter "$I" "${COMMON[@]}"
            fi
        done
    done
done
echo "iter_all.sh: done. Results: table.py --results <work_dir>/$PRESET/extracted_results"
