#!/usr/bin/env bash
# The reproduction's runs (REPRODUCTION.md): the repro preset, T = 4 target models, every run
# through run_grid.py, one piece (dataset, mode, seed) at a time. A finished piece's results are
# copied into reproduction/extracted_results/<mode>/ (its selections' logs into
# reproduction/selection_logs/<mode>/) and its wall time and the commit it ran at appended to
# reproduction/wall_times.tsv; a piece listed there is done and is skipped. The
# packages, Python, torch and CPU it ran with go to reproduction/environment.txt.
#
#   bash reproduction/campaign.sh                       every piece not done yet, in the order below
#   PIECES="digits:corrected:0 fmnist:corrected:1" bash reproduction/campaign.sh
#   PIECES="digits:corrected:5:lewis" bash reproduction/campaign.sh      a piece of other methods (comma-separated)
#                                                       on a seed's run folder: its iteration 0 is reused
#   LIST=1 bash reproduction/campaign.sh                the pieces it would run with their methods, one a
#                                                       line, done or not (what_ran.py reads the plan there)
#   COMMIT=1 bash reproduction/campaign.sh              also git-commit each finished piece (so a
#                                                       background campaign loses nothing when stopped)
#   touch runs/reproduction/PAUSE                       hold the campaign after the running piece (for
#                                                       benchmarks on an idle machine); rm it to go on
#
# The code that runs is this script's own checkout; RESULTS_DIR may sit in another checkout (a
# campaign pinned to one commit in a git worktree, writing into the main tree): each piece is then
# committed in the repository that holds the results.
# Also from the environment: PRESET (repro; the fourth edition's cells name theirs, reproduction/fourth_edition.sh),
# PYTHON, WORK_DIR (runs/reproduction), RESULTS_DIR (reproduction/extracted_results;
# its wall_times.tsv and environment.txt sit beside it), MODEL_NUM (4), CORRECTED_METHODS, ORIGINAL_METHODS,
# the seed counts of the plan (DIGITS_CORRECTED_SEEDS 15, DIGITS_ORIGINAL_SEEDS 10, FMNIST_SEEDS 10), the
# exploratory methods run beside the plan's (EXPLORATORY_METHODS, default lewis) and the corrected-mode seeds
# they run at (EXPLORATORY_DIGITS_SEEDS "5 6 7 8 9", EXPLORATORY_FMNIST_SEEDS "3 4 5"), and
# EXTRA_ARGS: flags for every run_grid.py call (preset overrides such as --epochs 1, for a toy campaign).
#
# Modes: corrected (the paper's text, the default behaviour) runs the paper's seven methods;
# original (--original_quirks, what the authors' code ran) runs the six the issue compares
# (coreset has no quirk of its own). The two never share a run folder or a results tree.
# Fashion-MNIST is read from $DIAM_DATA_ROOT (e.g. ../shared/datasets). An interrupted piece
# continues where it stopped when the campaign is started again (run_grid.py skips finished steps).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
PRESET=${PRESET:-repro}
WORK_DIR=${WORK_DIR:-runs/reproduction}
RESULTS=${RESULTS_DIR:-reproduction/extracted_results}
TIMES=$(dirname "$RESULTS")/wall_times.tsv
ENVIRONMENT=$(dirname "$RESULTS")/environment.txt
MODEL_NUM=${MODEL_NUM:-4}
CORRECTED_METHODS=${CORRECTED_METHODS:-random least_conf margin entropy coreset CAL DIAM}
ORIGINAL_METHODS=${ORIGINAL_METHODS:-random least_conf margin entropy CAL DIAM}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# The analysis plan's seed counts (REPRODUCTION.md, "Analysis plan"). Seeds first, so that an
# interrupted campaign leaves every (dataset, mode) with as many seeds as it can.
DIGITS_CORRECTED_SEEDS=${DIGITS_CORRECTED_SEEDS:-15}
DIGITS_ORIGINAL_SEEDS=${DIGITS_ORIGINAL_SEEDS:-10}
FMNIST_SEEDS=${FMNIST_SEEDS:-10}
# Methods outside the plan's family (issue 26's Lewis-weight sampling), each run right after its seed's
# corrected piece, in the same run folder, so that it shares that seed's iteration 0 exactly (a run
# folder lasts only as long as the machine it is on, and another machine trains other bits).
EXPLORATORY_METHODS=${EXPLORATORY_METHODS-lewis}
EXPLORATORY_DIGITS_SEEDS=${EXPLORATORY_DIGITS_SEEDS-5 6 7 8 9}
EXPLORATORY_FMNIST_SEEDS=${EXPLORATORY_FMNIST_SEEDS-3 4 5}
exploratory() {  # DATASET SEED: the exploratory piece of that corrected piece, if there is one
    local seeds
    [ "$1" = digits ] && seeds=$EXPLORATORY_DIGITS_SEEDS || seeds=$EXPLORATORY_FMNIST_SEEDS
    if [ -n "$EXPLORATORY_METHODS" ] && [[ " $seeds " == *" $2 "* ]]; then
        echo "$1:corrected:$2:${EXPLORATORY_METHODS// /,}"
    fi
}
default_pieces() {
    local seed last=$((DIGITS_CORRECTED_SEEDS > DIGITS_ORIGINAL_SEEDS ? DIGITS_CORRECTED_SEEDS : DIGITS_ORIGINAL_SEEDS))
    last=$((last > FMNIST_SEEDS ? last : FMNIST_SEEDS))
    for ((seed = 0; seed < last; seed++)); do
        [ "$seed" -ge "$DIGITS_CORRECTED_SEEDS" ] || { echo "digits:corrected:$seed"; exploratory digits "$seed"; }
        [ "$seed" -ge "$DIGITS_ORIGINAL_SEEDS" ] || echo "digits:original:$seed"
        [ "$seed" -ge "$FMNIST_SEEDS" ] || { echo "fmnist:corrected:$seed"; exploratory fmnist "$seed"; }
    done
}
PIECES=${PIECES:-$(default_pieces | tr '\n' ' ')}
if [ "${LIST:-0}" = 1 ]; then  # each piece with its methods spelled out
    for piece in $PIECES; do
        IFS=: read -r dataset mode seed chosen <<< "$piece"
        [ "$mode" = original ] && methods=$ORIGINAL_METHODS || methods=$CORRECTED_METHODS
        methods=${chosen:-${methods// /,}}
        echo "$dataset:$mode:$seed:$methods"
    done
    exit 0
fi

# The methods the tsv's finished pieces of (dataset, mode, seed) ran, one a line (from their commands).
methods_done() {
    awk -F'\t' -v d="$1" -v m="$2" -v s="$3" '$1 == d && $2 == m && $3 == s {
        n = split($NF, words, " "); listing = 0
        for (i = 1; i <= n; i++) {
            if (words[i] ~ /^--/) listing = (words[i] == "--methods")
            else if (listing) print words[i]
        }
    }' "$TIMES"
}

# A command as the tsv records it: each absolute path written relative to the project (the folder
# this script runs in), so that the record reads the same on any machine.
project_relative() {
    local word words=()
    for word in "$@"; do
        [[ "$word" != /* ]] || word=$(realpath -m -s --relative-to=. -- "$word")
        words+=("$word")
    done
    echo "${words[*]}"
}

run_piece() {
    local dataset=$1 mode=$2 seed=$3 chosen=$4 methods flags=()
    case "$mode" in
        corrected) methods=$CORRECTED_METHODS ;;
        original) methods=$ORIGINAL_METHODS; flags=(--original_quirks) ;;
    esac
    [ -z "$chosen" ] || methods=${chosen//,/ }
    local done_already missing=""
    done_already=$(methods_done "$dataset" "$mode" "$seed")
    for method in $methods; do
        grep -qxF -- "$method" <<< "$done_already" || missing="$missing $method"
    done
    if [ -z "$missing" ]; then
        echo "campaign.sh: $dataset $mode seed $seed ($methods): done already (in $TIMES)"
        return
    fi
    while [ -e "$WORK_DIR/PAUSE" ]; do  # held between pieces, never inside one (its wall time stays whole)
        [ -n "${paused:-}" ] || echo "campaign.sh: paused by $WORK_DIR/PAUSE; rm it to go on"
        paused=1
        sleep 20
    done
    paused=
    local work="$WORK_DIR/$mode"
    # shellcheck disable=SC2086  # the method lists are meant to split
    local cmd=("$PYTHON" run_grid.py --preset "$PRESET" --datasets "$dataset" --model_nums "$MODEL_NUM"
               --methods $methods --seeds "$seed" "${flags[@]}" "${EXTRA[@]}" --work_dir "$work")
    local started machine load_start commit
    commit=$(code_commit)
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)  # 1/5/15-minute load: other jobs slow a piece down
    machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs"
    echo "campaign.sh: $dataset $mode seed $seed: ${cmd[*]}"
    mkdir -p "$work"
    # A piece stopped part-way (a session's end) goes on where it stopped when started again; its wall
    # time is the sum of its runs: the time so far is kept beside it, a minute at a time.
    local elapsed="$work/.elapsed_${dataset}_seed${seed}_${methods// /_}"
    SECONDS=0
    if [ -f "$elapsed" ]; then
        SECONDS=$(cat "$elapsed")
        echo "campaign.sh: resumed; $SECONDS s of this piece ran before"
    fi
    ( while sleep 60; do echo "$SECONDS" > "$elapsed.tmp" && mv "$elapsed.tmp" "$elapsed"; done ) &
    local heartbeat=$!
    "${cmd[@]}" 2>&1 | tee -a "$work/campaign_${dataset}_seed${seed}.log"
    local wall=$SECONDS
    kill "$heartbeat" 2>/dev/null || true
    wait "$heartbeat" 2>/dev/null || true
    rm -f "$elapsed" "$elapsed.tmp"

    local seed_dir="" ; [ "$seed" -eq 0 ] || seed_dir="seed$seed/"
    local from="$work/$PRESET/extracted_results/${seed_dir}$MODEL_NUM/$dataset"
    local to="$RESULTS/$mode/${seed_dir}$MODEL_NUM/$dataset"
    # Every method is checked before any is copied, so that a failed piece leaves the results tree as
    # it was. Each is then copied on its own, so that a piece of other methods at this seed that
    # finished earlier, perhaps on another machine whose run folder is gone, keeps its results.
    for method in $methods; do
        if [ ! -d "$from/$method" ]; then
            echo "campaign.sh: $from/$method is missing after the grid finished; nothing of this piece was recorded" >&2
            exit 1
        fi
    done
    # What each selection printed (for the Lewis methods the sum of maximum Lewis weights over the pool,
    # the regime the report quotes) goes beside the results: the run folder's logs last only as long
    # as the machine they are on.
    local logs_from="$work/$PRESET/logs/${seed_dir}$dataset/T$MODEL_NUM" log
    local logs_to ; logs_to="$(dirname "$RESULTS")/selection_logs/$mode/${seed_dir}$dataset"
    mkdir -p "$to"
    for method in $methods; do
        rm -rf "$to/$method.tmp" && cp -r "$from/$method" "$to/$method.tmp" && rm -rf "$to/$method" &&
            mv "$to/$method.tmp" "$to/$method"
        for log in "$logs_from/$method"/iter*/select.log; do
            [ -f "$log" ] || continue
            mkdir -p "$logs_to/$method"
            cp "$log" "$logs_to/$method/.tmp" &&
                mv "$logs_to/$method/.tmp" "$logs_to/$method/$(basename "$(dirname "$log")").log"
        done
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dataset" "$mode" "$seed" "$wall" "$started" "$machine" \
        "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" "$commit" "$(project_relative "${cmd[@]}")" >> "$TIMES"
    local what="seed $seed"
    [ -z "$chosen" ] || what="seed $seed, $methods"
    echo "campaign.sh: $dataset $mode $what finished in $wall s; results in $to"
    if [ "${COMMIT:-0}" = 1 ]; then
        commit_piece "reproduction: $dataset, $mode mode, $what finished ($wall s on $(nproc) CPUs, code at $commit)" "$to" \
            "$logs_to"
    fi
}

# The commit this checkout's code is at, "+modified" when its code has uncommitted changes (then the
# commit alone does not say what ran).
code_commit() {
    local commit
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; return; }
    git diff --quiet HEAD -- diam ./*.py iter_all.sh requirements.txt || commit="$commit+modified"
    echo "$commit"
}

# What the pieces ran with, rewritten at each start (git history keeps the earlier ones).
record_environment() {
    {
        echo "# written by reproduction/campaign.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ), code at $(code_commit)"
        echo "python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
        echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())')"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs"
        echo "os: $(uname -srm)"
        # The speed switches (diam/speed.py): they change rounding at most, but a piece's record says which ran.
        echo "speed switches: $(env | grep -E '^DIAM_(SCORING|SCORING_BATCH|CUDA_FAST|CPU_FAST)=' | sort | tr '\n' ' ')"
        echo "# pip freeze"
        "$PYTHON" -m pip freeze --all 2>/dev/null
    } > "$ENVIRONMENT.tmp" && mv "$ENVIRONMENT.tmp" "$ENVIRONMENT"
}

# Commits only the piece's files (other staged work stays staged), in the repository that holds
# the results; a busy index (someone else committing) is retried, and a commit that never lands is
# said, not fatal: the files are kept.
commit_piece() {  # MESSAGE RESULTS_FOLDER LOGS_FOLDER (the second may not exist: no selection printed)
    local message=$1 folder=$2 repo
    repo=$(dirname "$TIMES")
    folder=$(realpath "$folder")
    local times ; times=$(realpath "$TIMES")
    local environment ; environment=$(realpath "$ENVIRONMENT")
    local paths=("$folder" "$times" "$environment")
    [ ! -d "$3" ] || paths+=("$(realpath "$3")")
    for _ in 1 2 3 4 5 6; do
        if git -C "$repo" add -- "${paths[@]}" &&
           git -C "$repo" commit -q -m "$message" -- "${paths[@]}"; then
            return
        fi
        sleep 10
    done
    echo "campaign.sh: could not commit $folder; its files are in place: commit them by hand" >&2
}

# Every piece is checked before the first one runs.
for piece in $PIECES; do
    IFS=: read -r dataset mode seed chosen <<< "$piece"
    if [ -z "$seed" ] || ! [[ "$seed" =~ ^[0-9]+$ ]]; then
        echo "campaign.sh: a piece is DATASET:MODE:SEED[:METHOD,...] (e.g. digits:corrected:0), got '$piece'" >&2
        exit 2
    fi
    if [ "$mode" != corrected ] && [ "$mode" != original ]; then
        echo "campaign.sh: unknown mode '$mode' in '$piece': a mode is corrected or original" >&2
        exit 2
    fi
    # The dataset names a log and a results folder, so it must be a name: a dataset file (run_grid.py
    # takes one) would only fail after the whole grid had run, with nothing recorded.
    if [[ "$dataset" == */* || "$dataset" == *.json || "$dataset" == *.csv ]]; then
        echo "campaign.sh: the piece '$piece' names a file as its dataset; a campaign runs built-in datasets" \
             "(digits, fmnist, mnist10k, ...). Run your own images with run_grid.py --datasets FILE instead" \
             "(docs/own_data.md); nothing was run." >&2
        exit 2
    fi
done
mkdir -p "$RESULTS"
[ -f "$TIMES" ] || printf 'dataset\tmode\tseed\twall_s\tstarted\tmachine\tload_start\tload_end\tcommit\tcommand\n' > "$TIMES"
record_environment

for piece in $PIECES; do
    IFS=: read -r dataset mode seed chosen <<< "$piece"
    run_piece "$dataset" "$mode" "$seed" "$chosen"
done
