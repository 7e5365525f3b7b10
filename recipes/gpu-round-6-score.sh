#!/usr/bin/env bash
# Round 6 (#30), here on the CPU after the GPU call (recipes/gpu-round-6.sh): score what came back by the rule of
# docs/results.md, in one command.
#
#   bash recipes/gpu-round-6-score.sh RESULTS      # RESULTS: the folder the call's files were fetched to
#
# 1. Each candidate split in parts (NAME.pt.part1, part2...) joined into runs/round-6/NAME.pt (RESULTS may be
#    read-only).
# 2. The proviso's 500 held-out composites made once (harmonize heldout --recipe iharmony4 --seed 2027) into
#    $HELDOUT, and kept for later rounds.
# 3. harmonize choose on the 32 real triples of $BENCH, every candidate in the Lab ensemble at 0.3 as shipped,
#    with the held-out proviso (scored for the candidates that pass on the real triples: HELDOUT_ALL=1 for all)
#    and a contact sheet of the 30 real composites: the verdicts in $CSV, the sheet in
#    $SHEET, the report in runs/round-6/choose.txt. Look at the sheet before shipping a winner.
set -euo pipefail
RESULTS=${1:?the folder the GPU call wrote (its files fetched here)}
BENCH=${BENCH:-../shared/bench}
DATA=${DATA:-../shared/data}
HELDOUT=${HELDOUT:-runs/heldout-ih4}
CSV=${CSV:-docs/results/round-6-gpu.csv}
SHEET=${SHEET:-runs/round-6/contact-sheet.jpg}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=runs/round-6
if ! command -v harmonize >/dev/null; then
    harmonize() { "$PYTHON" -c 'import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
fi
mkdir -p "$WORK"
candidates=()
for part1 in "$RESULTS"/*.pt.part1; do
    [ -e "$part1" ] || continue
    whole="$WORK/$(basename "${part1%.part1}")"
    mapfile -t parts < <(printf '%s\n' "${part1%1}"* | sort -V)  # part10 after part9: by number, not by name
    cat "${parts[@]}" >"$whole.tmp" && mv "$whole.tmp" "$whole"
    candidates+=(--candidate "$whole")
done
for ckpt in "$RESULTS"/*.pt; do
    [ -e "$ckpt" ] && candidates+=(--candidate "$ckpt")
done
[ ${#candidates[@]} -gt 0 ] || { echo "$RESULTS: no checkpoint (*.pt or *.pt.part1) came back" >&2; exit 2; }
if [ ! -e "$HELDOUT/MANIFEST.csv" ]; then
    rm -rf "$HELDOUT"
    harmonize heldout --data "$DATA" --recipe iharmony4 --count 500 --seed 2027 -o "$HELDOUT"
fi
harmonize choose "$BENCH/iharmony4-val" "$BENCH/iharmony4-samples" --heldout "$HELDOUT" --lab-mix 0.3 \
    ${HELDOUT_ALL:+--heldout-all} \
    "${candidates[@]}" --csv "$CSV" --sheet "$BENCH/real-composites" "$SHEET" | tee "$WORK/choose.txt"
