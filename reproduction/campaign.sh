#!/usr/bin/env bash
# The second edition's runs (REPRODUCTION.md): the repro preset, T = 4 target models, every run
# through run_grid.py, one piece (dataset, mode, seed) at a time. A finished piece's results are
# copied into reproduction/extracted_results/<mode>/ and its wall time appended to
# reproduction/wall_times.tsv; a piece listed there is done and is skipped.
#
#   bash reproduction/campaign.sh                       every piece not done yet, in the order below
#   PIECES="digits:corrected:0 fmnist:corrected:1" bash reproduction/campaign.sh
#   COMMIT=1 bash reproduction/campaign.sh              also git-commit each finished piece (so a
#                                                       background campaign loses nothing when stopped)
# Also from the environment: PYTHON, WORK_DIR (runs/reproduction), RESULTS_DIR (reproduction/extracted_results;
# its wall_times.tsv sits beside it), MODEL_NUM (4), CORRECTED_METHODS, ORIGINAL_METHODS, and EXTRA_ARGS:
# flags for every run_grid.py call (preset overrides such as --epochs 1, for a toy campaign).
#
# Modes: corrected (the paper's text, the default behaviour) runs the paper's seven methods;
# original (--original_quirks, what the authors' code ran) runs the six the issue compares
# (coreset has no quirk of its own). The two never share a run folder or a results tree.
# Fashion-MNIST is read from $DIAM_DATA_ROOT (e.g. ../shared/datasets). An interrupted piece
# continues where it stopped when the campaign is started again (run_grid.py skips finished steps).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
WORK_DIR=${WORK_DIR:-runs/reproduction}
RESULTS=${RESULTS_DIR:-reproduction/extracted_results}
TIMES=$(dirname "$RESULTS")/wall_times.tsv
MODEL_NUM=${MODEL_NUM:-4}
CORRECTED_METHODS=${CORRECTED_METHODS:-random least_conf margin entropy coreset CAL DIAM}
ORIGINAL_METHODS=${ORIGINAL_METHODS:-random least_conf margin entropy CAL DIAM}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# Seeds first, so that an interrupted campaign leaves every (dataset, mode) with as many seeds as it can.
default_pieces() {
    for seed in 0 1 2 3 4; do
        echo "digits:corrected:$seed digits:original:$seed"
        [ "$seed" -ge 3 ] || echo "fmnist:corrected:$seed"
    done
}
PIECES=${PIECES:-$(default_pieces | tr '\n' ' ')}

run_piece() {
    local dataset=$1 mode=$2 seed=$3 methods flags=()
    case "$mode" in
        corrected) methods=$CORRECTED_METHODS ;;
        original) methods=$ORIGINAL_METHODS; flags=(--original_quirks) ;;
    esac
    if awk -F'\t' -v d="$dataset" -v m="$mode" -v s="$seed" '$1 == d && $2 == m && $3 == s {found = 1}
                                                             END {exit !found}' "$TIMES"; then
        echo "campaign.sh: $dataset $mode seed $seed: done already (in $TIMES)"
        return
    fi
    local work="$WORK_DIR/$mode"
    # shellcheck disable=SC2086  # the method lists are meant to split
    local cmd=("$PYTHON" run_grid.py --preset repro --datasets "$dataset" --model_nums "$MODEL_NUM"
               --methods $methods --seeds "$seed" "${flags[@]}" "${EXTRA[@]}" --work_dir "$work")
    local started machine load_start
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)  # 1/5/15-minute load: other jobs slow a piece down
    machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs"
    echo "campaign.sh: $dataset $mode seed $seed: ${cmd[*]}"
    mkdir -p "$work"
    SECONDS=0
    "${cmd[@]}" 2>&1 | tee -a "$work/campaign_${dataset}_seed${seed}.log"
    local wall=$SECONDS

    local seed_dir="" ; [ "$seed" -eq 0 ] || seed_dir="seed$seed/"
    local from="$work/repro/extracted_results/${seed_dir}$MODEL_NUM/$dataset"
    local to="$RESULTS/$mode/${seed_dir}$MODEL_NUM/$dataset"
    mkdir -p "$(dirname "$to")"
    rm -rf "$to.tmp" && cp -r "$from" "$to.tmp" && rm -rf "$to" && mv "$to.tmp" "$to"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dataset" "$mode" "$seed" "$wall" "$started" "$machine" \
        "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" "${cmd[*]}" >> "$TIMES"
    echo "campaign.sh: $dataset $mode seed $seed finished in $wall s; results in $to"
    if [ "${COMMIT:-0}" = 1 ]; then
        commit_piece "reproduction: $dataset, $mode mode, seed $seed finished ($wall s on $(nproc) CPUs)" "$to"
    fi
}

# Commits only the piece's files (other staged work stays staged); a busy index (someone else
# committing) is retried, and a commit that never lands is said, not fatal: the files are kept.
commit_piece() {
    local message=$1 folder=$2
    for _ in 1 2 3 4 5 6; do
        if git add -- "$folder" "$TIMES" && git commit -q -m "$message" -- "$folder" "$TIMES"; then
            return
        fi
        sleep 10
    done
    echo "campaign.sh: could not commit $folder; its files are in place: commit them by hand" >&2
}

# Every piece is checked before the first one runs.
for piece in $PIECES; do
    IFS=: read -r dataset mode seed <<< "$piece"
    if [ -z "$seed" ] || ! [[ "$seed" =~ ^[0-9]+$ ]]; then
        echo "campaign.sh: a piece is DATASET:MODE:SEED (e.g. digits:corrected:0), got '$piece'" >&2
        exit 2
    fi
    if [ "$mode" != corrected ] && [ "$mode" != original ]; then
        echo "campaign.sh: unknown mode '$mode' in '$piece': a mode is corrected or original" >&2
        exit 2
    fi
done
mkdir -p "$RESULTS"
[ -f "$TIMES" ] || printf 'dataset\tmode\tseed\twall_s\tstarted\tmachine\tload_start\tload_end\tcommand\n' > "$TIMES"

for piece in $PIECES; do
    IFS=: read -r dataset mode seed <<< "$piece"
    run_piece "$dataset" "$mode" "$seed"
done
