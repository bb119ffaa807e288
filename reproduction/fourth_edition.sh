#!/usr/bin/env bash
# The fourth edition's campaign (REPRODUCTION.md, "Analysis plan (fourth edition)"): its cells, their
# seeds and methods, in the plan's order, each piece one reproduction/campaign.sh call. Cells:
#   a  KMNIST (kmnist10k) at the budget preset, the paper's seven methods, seeds 0-15 (primary);
#      lewis_oneshot beside it at every seed (exploratory)
#   c  KMNIST at the repro preset (the low budget), random entropy CAL DIAM, seeds 0-13;
#      badge and bald beside it at every seed (exploratory)
#   b  MNIST (mnist10k) at the budget preset, random entropy CAL DIAM, seeds 0-9
#   d  Fashion-MNIST at the paper's counts (paper32 preset), random CAL DIAM, seeds 0-4 (optional, last)
# Seeds outer over a and c, then b, then d: a campaign stopped part-way leaves the primary cell with
# as many seeds as it could. Cell a's seven methods run as two pieces at each seed (random entropy CAL
# DIAM, then least_conf margin coreset): a whole seed takes 2-3 hours of the two cores, about a
# session, and a run folder lasts only as long as its machine, so each half is committed as it
# finishes (the second reuses the first's iteration 0 when it runs on the same machine). Each preset
# has its own results tree, wall_times.tsv and environment.txt under reproduction/fourth_edition/<preset>/
# and its own run folders under runs/fourth_edition/<preset>/.
#
#   bash reproduction/fourth_edition.sh                 every piece not done yet (a piece in its tsv is done)
#   LIST=1 bash reproduction/fourth_edition.sh          the plan's pieces, CELL PRESET DATASET:MODE:SEED:METHODS a line
#   CELLS="a c" bash reproduction/fourth_edition.sh     only these cells
#   COMMIT=1 ...                                        git-commit each finished piece (campaign.sh)
#   DRAW=1 bash reproduction/fourth_edition.sh          redraw each preset's tables, what_ran.md, reading.txt and
#                                                       figures from its committed results, against this plan
#   PROGRESS=1 bash reproduction/fourth_edition.sh      only each preset's what_ran.md (the pieces that ran
#                                                       against the plan: no result is read)
#   (both then show the what_ran.md files in REPRODUCTION.md, when RESULTS_ROOT is the project's own)
#   touch runs/fourth_edition/PAUSE                     hold it between pieces; rm it to go on
# Also: PYTHON, DIAM_DATA_ROOT (the folder holding MNIST/, KMNIST/ and FashionMNIST/), RESULTS_ROOT
# (reproduction/fourth_edition) and WORK_ROOT (runs/fourth_edition), for a campaign pinned in a worktree
# that writes into the main checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

RESULTS_ROOT=${RESULTS_ROOT:-reproduction/fourth_edition}
WORK_ROOT=${WORK_ROOT:-runs/fourth_edition}
CELLS=${CELLS:-a c b d}
EXPLORATORY_A=${EXPLORATORY_A-lewis_oneshot}
EXPLORATORY_C=${EXPLORATORY_C-badge bald}
FOUR="random entropy CAL DIAM"
PAPER_SEVEN_HALVES="random,entropy,CAL,DIAM least_conf,margin,coreset"  # the paper's seven in two pieces

# cell -> preset, dataset, seeds, methods (the plan's; REPRODUCTION.md says why each)
preset_of() { case $1 in a|b) echo budget ;; c) echo repro ;; d) echo paper32 ;; esac; }
dataset_of() { case $1 in a|c) echo kmnist10k ;; b) echo mnist10k ;; d) echo fmnist ;; esac; }
seeds_of() { case $1 in a) seq 0 15 ;; c) seq 0 13 ;; b) seq 0 9 ;; d) seq 0 4 ;; esac; }
methods_of() {  # a piece's methods comma-separated, pieces space-separated
    case $1 in a) echo "$PAPER_SEVEN_HALVES" ;; b|c) echo "${FOUR// /,}" ;; d) echo "random,CAL,DIAM" ;; esac
}
exploratory_of() { case $1 in a) echo "$EXPLORATORY_A" ;; c) echo "$EXPLORATORY_C" ;; *) echo "" ;; esac; }

wanted() { [[ " $CELLS " == *" $1 "* ]]; }
pieces_of_seed() {  # CELL SEED: the cell's pieces at that seed, "CELL PIECE" a line
    local methods exploratory
    exploratory=$(exploratory_of "$1")
    for methods in $(methods_of "$1"); do echo "$1 $(dataset_of "$1"):corrected:$2:$methods"; done
    [ -z "$exploratory" ] || echo "$1 $(dataset_of "$1"):corrected:$2:${exploratory// /,}"
}
plan() {
    local seed cell
    for seed in $(seq 0 15); do
        for cell in a c; do
            if wanted "$cell" && seeds_of "$cell" | grep -qx "$seed"; then pieces_of_seed "$cell" "$seed"; fi
        done
    done
    for cell in b d; do
        if wanted "$cell"; then
            for seed in $(seeds_of "$cell"); do pieces_of_seed "$cell" "$seed"; done
        fi
    done
}

for cell in $CELLS; do
    case $cell in a|b|c|d) ;; *) echo "fourth_edition.sh: unknown cell '$cell' in CELLS: the cells are a, b, c and d" >&2
                                 exit 2 ;; esac
done
if [ "${LIST:-0}" = 1 ]; then
    plan | while read -r cell piece; do echo "$cell $(preset_of "$cell") $piece"; done
    exit 0
fi

planned_of() {  # PRESET: the plan's pieces that run at that preset, a line each
    plan | while read -r cell piece; do [ "$(preset_of "$cell")" != "$1" ] || echo "$piece"; done
}
# REPRODUCTION.md shows each preset's what_ran.md (embed.py) when the trees drawn are the project's own.
show_progress() {
    [ "$(realpath "$RESULTS_ROOT")" = "$(realpath reproduction/fourth_edition)" ] || return 0
    "${PYTHON:-python}" reproduction/embed.py REPRODUCTION.md
}

if [ "${PROGRESS:-0}" = 1 ]; then  # what_ran.py alone: the pieces in each tsv against the plan
    for preset in budget repro paper32; do
        [ -f "$RESULTS_ROOT/$preset/wall_times.tsv" ] || continue
        "${PYTHON:-python}" reproduction/what_ran.py --times "$RESULTS_ROOT/$preset/wall_times.tsv" \
            --planned "$(planned_of "$preset")" --out "$RESULTS_ROOT/$preset/what_ran.md"
    done
    show_progress
    exit 0
fi

if [ "${DRAW:-0}" = 1 ]; then  # reproduction/report.sh on each preset's tree, the plan's pieces of that preset
    for preset in budget repro paper32; do
        [ -f "$RESULTS_ROOT/$preset/wall_times.tsv" ] || continue
        # The budget tree's reading sets cell (a) beside cell (c), KMNIST at the repro preset: the budget's effect.
        beside=""; [ "$preset" != budget ] || [ ! -d "$RESULTS_ROOT/repro/extracted_results" ] ||
            beside="$RESULTS_ROOT/repro/extracted_results"
        PLANNED=$(planned_of "$preset") RESULTS_DIR="$RESULTS_ROOT/$preset/extracted_results" BESIDE="$beside" \
            REPORT="" bash reproduction/report.sh
    done
    show_progress
    exit 0
fi

plan | while read -r cell piece; do
    while [ -e "$WORK_ROOT/PAUSE" ]; do
        [ -n "${paused:-}" ] || echo "fourth_edition.sh: paused by $WORK_ROOT/PAUSE; rm it to go on"
        paused=1
        sleep 20
    done
    paused=
    preset=$(preset_of "$cell")
    echo "fourth_edition.sh: cell $cell ($preset): $piece"
    PRESET=$preset PIECES=$piece RESULTS_DIR="$RESULTS_ROOT/$preset/extracted_results" \
        WORK_DIR="$WORK_ROOT/$preset" bash reproduction/campaign.sh < /dev/null
done
