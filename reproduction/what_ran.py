"""The reproduction's "What ran" table, from reproduction/wall_times.tsv and the campaign's plan:
per (dataset, mode, methods) the seeds finished against the seeds planned, the summed wall time of
their pieces and the machines they ran on, as Markdown.

    python reproduction/what_ran.py                      # the plan from `LIST=1 bash reproduction/campaign.sh`
    python reproduction/what_ran.py --times T --planned "digits:corrected:0:random,DIAM digits:corrected:0:lewis"
    python reproduction/what_ran.py --unfinished         # the cells with results and planned pieces to go
    python reproduction/what_ran.py --out what_ran.md    # the table written to a file (temp file + rename)

Pieces are grouped by the methods they run: the plan's seven (six in the original mode) and each
exploratory set (such as lewis) get rows of their own.
"""
import argparse
import csv
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from diam.paths import write_text  # noqa: E402 (reproduction/ is a folder of scripts, not a package)

NEEDED_COLUMNS = ("dataset", "mode", "seed", "wall_s", "machine", "command")


def planned_pieces(text: str) -> list[tuple[str, str, int, str]]:
    """(dataset, mode, seed, methods space-separated) of each DATASET:MODE:SEED:METHOD,... piece."""
    pieces = []
    for piece in text.split():
        parts = piece.split(":")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3]:
            sys.exit(f"what_ran.py: a planned piece is DATASET:MODE:SEED:METHOD,... (e.g. "
                     f"digits:corrected:0:random,DIAM, as `LIST=1 bash reproduction/campaign.sh` prints them), "
                     f"got '{piece}'.")
        dataset, mode, seed, methods = parts
        pieces.append((dataset, mode, int(seed), methods.replace(",", " ")))
    return pieces


def campaign_plan() -> str:
    """The campaign's planned pieces, as `LIST=1 bash reproduction/campaign.sh` prints them."""
    return subprocess.run(["bash", str(HERE / "campaign.sh")], env={**os.environ, "LIST": "1"},
                          capture_output=True, text=True, check=True).stdout


def methods_of(command: str) -> str:
    """The --methods list of a run_grid.py command line, space-separated."""
    listed = re.search(r"--methods ((?:[^-\s]\S*\s*)+)", command)
    return listed.group(1).strip() if listed else ""


def short_machine(machine: str) -> str:
    """'Intel(R) Xeon(R) Processor, 2 CPUs' -> 'Intel Xeon Processor'."""
    return re.sub(r"\((R|TM)\)", "", machine.rsplit(",", 1)[0]).replace("  ", " ").strip()


def pieces_to_go(times_rows: list[dict], planned: list[tuple[str, str, int, str]]) -> list[tuple]:
    """The planned pieces no line of the tsv finished."""
    finished = {(row["dataset"], row["mode"], int(row["seed"]), methods_of(row["command"])) for row in times_rows}
    return [piece for piece in planned if piece not in finished]


def unfinished_cells(times_rows: list[dict], planned: list[tuple[str, str, int, str]]) -> list[str]:
    """MODE/DATASET of each cell (a mode's dataset) that has finished pieces and planned ones to go: the
    cells whose verdicts the analysis plan still withholds (a cell with no results has none to hold)."""
    started = {(row["mode"], row["dataset"]) for row in times_rows}
    to_go = {(mode, dataset) for dataset, mode, _, _ in pieces_to_go(times_rows, planned)}
    return [f"{mode}/{dataset}" for mode, dataset in sorted(to_go & started)]


def table(times_rows: list[dict], planned: list[tuple[str, str, int, str]]) -> str:
    cells = defaultdict(lambda: {"planned": set(), "done": set(), "wall": 0, "machines": []})
    for dataset, mode, seed, methods in planned:
        cells[(dataset, mode, methods)]["planned"].add(seed)
    for row in times_rows:
        cell = cells[(row["dataset"], row["mode"], methods_of(row["command"]))]
        cell["done"].add(int(row["seed"]))
        cell["wall"] += int(row["wall_s"])
        machine = short_machine(row["machine"])
        if machine not in cell["machines"]:
            cell["machines"].append(machine)
    lines = ["| dataset | mode | methods | seeds done (planned) | wall time of its pieces | machines |",
             "|---|---|---|---|---|---|"]
    # Per dataset and mode, the plan's piece (most methods) first, then the exploratory ones.
    for (dataset, mode, methods), cell in sorted(cells.items(), key=lambda kv: (*kv[0][:2], -len(kv[0][2].split()))):
        done = sorted(cell["done"])
        seeds = f"{len(done)} of {len(cell['planned'])}" if cell["planned"] else f"{len(done)} (not in the plan)"
        if done:
            seeds += f" ({', '.join(map(str, done))})"
        lines.append(f"| {dataset} | {mode} | {methods} | {seeds} | {cell['wall']:,} s | "
                     f"{', '.join(cell['machines']) or '-'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", default=str(HERE / "wall_times.tsv"), help="the campaign's wall_times.tsv")
    parser.add_argument("--planned", help="the planned pieces, space-separated (default: campaign.sh's own list)")
    parser.add_argument("--unfinished", action="store_true",
                        help="print, on one line, MODE/DATASET of each cell with results and planned pieces to go "
                             "(what report.sh passes to table.py --interim); nothing when the plan has finished")
    parser.add_argument("--out", help="write the table to this file (a temp file renamed over it) instead of printing it")
    args = parser.parse_args(argv)
    planned = args.planned if args.planned is not None else campaign_plan()
    try:
        with open(args.times, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = list(reader)
    except FileNotFoundError:
        sys.exit(f"what_ran.py: no {args.times}: the campaign writes it when its first piece finishes; "
                 "give --times for another campaign's file.")
    missing = [name for name in NEEDED_COLUMNS if name not in (reader.fieldnames or [])]
    broken = [] if missing else [number for number, row in enumerate(rows, start=2)
                                 if None in row.values() or not row["seed"].isdigit()]
    if missing or broken:
        sys.exit(f"what_ran.py: {args.times} is not a campaign's wall_times.tsv: "
                 + (f"it lacks the column(s) {', '.join(missing)}" if missing else
                    f"line(s) {', '.join(map(str, broken[:5]))} have too few fields or no seed")
                 + ". campaign.sh writes it (tab-separated, one line a finished piece); restore it from git.")
    pieces = planned_pieces(planned)
    if args.unfinished:
        print(" ".join(unfinished_cells(rows, pieces)))
        return
    if args.out:
        write_text(args.out, table(rows, pieces) + "\n")
    else:
        print(table(rows, pieces))


if __name__ == "__main__":
    main()
