#!/usr/bin/env bash
# Redraw the reproduction's tables and figures from the committed results alone
# (reproduction/extracted_results/{corrected,original}/), whatever pieces have landed:
#   bash reproduction/report.sh           (RESULTS_DIR=... MODEL_NUM=... for another tree: the files go beside it;
#                                          PLANNED="DATASET:MODE:SEED:METHOD,... ..." for another campaign's plan,
#                                          as `DRAW=1 bash reproduction/fourth_edition.sh` passes it;
#                                          BESIDE=DIR another preset's folder of trees, for reading.py --beside)
# writes reproduction/table.txt and table.tex (table.py), what_ran.md (the campaign's pieces against
# its plan, reproduction/what_ran.py), reading.txt (the numbers the report's prose quotes beyond the
# tables, reproduction/reading.py), and per dataset the learning curves
# with 95% CI bands, lc_<dataset>.png/.pdf (the corrected mode's row above the original's
# where both exist), their penalty matrices, lc_<dataset>_penalty.png/.pdf, and the paired
# differences per round with their 95% CIs, lc_<dataset>_differences.png/.pdf (plot.py). Then
# REPRODUCTION.md (or REPORT=FILE; none for another RESULTS_DIR) shows what_ran.md and table.txt as
# written (reproduction/embed.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
RESULTS=${RESULTS_DIR:-reproduction/extracted_results}
OUT=$(dirname "$RESULTS")
MODEL_NUM=${MODEL_NUM:-4}
if [ -z "${RESULTS_DIR:-}" ]; then REPORT=${REPORT-REPRODUCTION.md}; else REPORT=${REPORT-}; fi

# Where a campaign's wall_times.tsv sits beside the results: what ran against its plan
# (what_ran.py), and the verdict words withheld in each cell (mode/dataset) with planned pieces to
# go (the analysis plan draws a cell's verdicts once, at its seeds). A results tree without a
# campaign is not held back.
interim=()
planned=(); [ -z "${PLANNED+set}" ] || planned=(--planned "$PLANNED")  # default: campaign.sh's own plan
if [ -f "$OUT/wall_times.tsv" ]; then
    "$PYTHON" reproduction/what_ran.py --times "$OUT/wall_times.tsv" "${planned[@]}" --out "$OUT/what_ran.md"
    unfinished=$("$PYTHON" reproduction/what_ran.py --times "$OUT/wall_times.tsv" "${planned[@]}" --unfinished)
    # shellcheck disable=SC2206 # cell names hold no spaces: split into words on purpose
    if [ -n "$unfinished" ]; then interim=(--interim $unfinished); fi
fi
# Written whole or not at all: a failing table.py leaves the previous files in place.
for kind in txt tex; do
    flags=("${interim[@]}"); [ "$kind" = txt ] || flags+=(--latex)
    "$PYTHON" table.py --results "$RESULTS" --model_nums "$MODEL_NUM" "${flags[@]}" > "$OUT/.table.$kind.tmp"
    mv "$OUT/.table.$kind.tmp" "$OUT/table.$kind"
done
beside=(); [ -z "${BESIDE:-}" ] || beside=(--beside "$BESIDE")
"$PYTHON" reproduction/reading.py --results "$RESULTS" --model_num "$MODEL_NUM" "${planned[@]}" "${interim[@]}" \
    "${beside[@]}" > "$OUT/.reading.txt.tmp"
mv "$OUT/.reading.txt.tmp" "$OUT/reading.txt"
# One figure per dataset; its rows are the mode trees that hold it (plot.py reads the folder of trees).
"$PYTHON" plot.py --results "$RESULTS" --model_num "$MODEL_NUM" --each_dataset --out "$OUT/lc"
echo "report.sh: wrote $OUT/table.txt, table.tex, what_ran.md, reading.txt and lc_*.png/.pdf"
if [ -n "$REPORT" ]; then "$PYTHON" reproduction/embed.py "$REPORT" --folder "$OUT"; fi
