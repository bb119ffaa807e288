#!/usr/bin/env bash
# The fourth edition's budget sweep (issue 32, REPRODUCTION.md): iteration 0 of T = 4 nets on the
# KMNIST pool made from its official test split (kmnist10k: 8,000 pool images, 2,000 test images),
# at 32 px with the repro preset's training (20 epochs of batch 25 at lr 0.03), for several initial
# label counts and seeds. Each piece is one (count, seed): iter_all.sh with ITERS=0 and PARALLEL=2
# (two training processes of one thread each), iteration 0's passes over the pool included, as a
# campaign records them. Its wall time and the T nets' mean top-1 go to budget_sweep/sweep.tsv with
# the machine, the load, the commit and DIAM_CPU_FAST; its performances.txt to budget_sweep/<count>/.
#
#   bash reproduction/budget_sweep.sh                 COUNTS="200 500 1000 2000" SEEDS="0 1 2"
#   COMMIT=1 bash reproduction/budget_sweep.sh        also git-commit each finished piece
#   SUMMARY=1 bash reproduction/budget_sweep.sh       only print the table of what has run
# A piece listed in the tsv is done and skipped; an interrupted piece starts again (iter_all.sh skips
# the nets it finished). Also: PYTHON, DATASET (kmnist10k), WORK_DIR
# (runs/budget_sweep), DIAM_DATA_ROOT (the folder holding KMNIST/raw/t10k-*).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
DATASET=${DATASET:-kmnist10k}
COUNTS=${COUNTS:-200 500 1000 2000}
SEEDS=${SEEDS:-0 1 2}
WORK=${WORK_DIR:-runs/budget_sweep}
OUT=reproduction/budget_sweep
TSV=$OUT/sweep.tsv
T=4

summary() {  # per label count: seeds, mean and sd of the T nets' mean top-1, mean wall time
    awk -F'\t' 'NR > 1 { n[$1]++; s[$1] += $5; q[$1] += $5 * $5; w[$1] += $4; d[$1] = $2 }
        END { printf "%-9s %-9s %5s %8s %6s %8s\n", "dataset", "labels", "seeds", "top-1 %", "sd", "wall s"
              for (c in n) { m = s[c] / n[c]; v = n[c] > 1 ? (q[c] - n[c] * m * m) / (n[c] - 1) : 0
                             printf "%-9s %-9s %5d %8.2f %6.2f %8.0f\n", d[c], c, n[c], m, sqrt(v > 0 ? v : 0), w[c] / n[c] } }' \
        "$TSV" | sort -k2 -n
}
if [ "${SUMMARY:-0}" = 1 ]; then
    summary
    exit 0
fi

mkdir -p "$OUT"
[ -f "$TSV" ] || printf 'labels\tdataset\tseed\twall_s\tmean_top1\tstarted\tmachine\tload_start\tload_end\tcommit\tDIAM_CPU_FAST\n' > "$TSV"
commit=$(git rev-parse --short=12 HEAD)
git diff --quiet HEAD -- diam ./*.py iter_all.sh || commit="$commit+modified"
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs"

# Seeds outer: a sweep stopped part-way has every label count with as many seeds as it could.
for seed in $SEEDS; do
    for count in $COUNTS; do
        if awk -F'\t' -v c="$count" -v d="$DATASET" -v s="$seed" '$1 == c && $2 == d && $3 == s { found = 1 }
                                                                 END { exit !found }' "$TSV"; then
            echo "budget_sweep.sh: $DATASET, $count labels, seed $seed: done already (in $TSV)"
            continue
        fi
        started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
        load_start=$(cut -d' ' -f1-3 /proc/loadavg)
        echo "budget_sweep.sh: $DATASET, $count labels, seed $seed"
        SECONDS=0
        PRESET=repro DATASETS=$DATASET METHODS=random ITERS=0 SEEDS=$seed PARALLEL=2 PYTHON=$PYTHON \
            EXTRA_ARGS="--initial_labeled $count --pool_size 8000 --test_size 2000 --work_dir $WORK/$count" \
            bash iter_all.sh cpu "$T"
        wall=$SECONDS
        seed_dir="" ; [ "$seed" -eq 0 ] || seed_dir="seed$seed/"
        from="$WORK/$count/repro/extracted_results/${seed_dir}$T/$DATASET/random/0"
        to="$OUT/$count/${seed_dir}$T/$DATASET/random/0"
        mkdir -p "$to"
        cp "$from/performances.txt" "$from/models.json" "$to/"
        mean=$(awk '{ s += $1 } END { printf "%.4f", s / NR }' "$to/performances.txt")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$count" "$DATASET" "$seed" "$wall" "$mean" "$started" \
            "$machine" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" "$commit" "${DIAM_CPU_FAST:-}" >> "$TSV"
        echo "budget_sweep.sh: $DATASET, $count labels, seed $seed: mean top-1 $mean% in $wall s"
        if [ "${COMMIT:-0}" = 1 ]; then
            git add -- "$to" "$TSV" && git commit -q -m "budget sweep: $DATASET, $count labels, seed $seed (mean top-1 $mean%, $wall s on $(nproc) CPUs, code at $commit)" -- "$to" "$TSV" \
                || echo "budget_sweep.sh: could not commit; the files are in place" >&2
        fi
    done
done
summary
