"""reproduction/campaign.sh and report.sh: the second edition's driver and report, at toy size (one T,
two methods, one epoch)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import PROJECT
from diam import analysis, statistics
from diam import results as results_module
from test_statistics import diam_gain, model_mean, write_seed_tree

TOY = "--epochs 1 --initial_labeled 20 --query_batch 10 --al_iters 2 --test_size 60 --num_cpus 2"


def campaign_env(tmp_path, pieces, **env):
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "PIECES": pieces,
            "WORK_DIR": str(tmp_path / "runs"), "RESULTS_DIR": str(tmp_path / "repro" / "extracted_results"),
            "MODEL_NUM": "2", "CORRECTED_METHODS": "random DIAM", "ORIGINAL_METHODS": "random",
            "EXTRA_ARGS": TOY, **env}
    full.pop("COMMIT", None)
    return full


def campaign(tmp_path, pieces, **env):
    return subprocess.run(["bash", str(PROJECT / "reproduction" / "campaign.sh")], env=campaign_env(tmp_path, pieces, **env),
                          capture_output=True, text=True, timeout=600)


def test_each_finished_piece_lands_in_its_mode_tree_with_its_wall_time_and_is_not_run_twice(tmp_path):
    # Started paused (as for a benchmark on an idle machine): nothing runs until the PAUSE file goes.
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "PAUSE").touch()
    first = subprocess.Popen(["bash", str(PROJECT / "reproduction" / "campaign.sh")],
                             env=campaign_env(tmp_path, "digits:corrected:0 digits:original:1"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "paused by" in first.stdout.readline()
    assert not (tmp_path / "runs" / "corrected").exists()
    (tmp_path / "runs" / "PAUSE").unlink()
    output = first.stdout.read()
    assert first.wait(timeout=600) == 0, output[-3000:]
    results = tmp_path / "repro" / "extracted_results"
    for mode, seed_dir, methods in (("corrected", "", ["random", "DIAM"]), ("original", "seed1/", ["random"])):
        for method in methods:
            for al_iter in (0, 1):
                assert (results / mode / f"{seed_dir}2/digits/{method}/{al_iter}/performances.txt").is_file()
    assert not (results / "original" / "2").exists()  # seed 1 only: nothing at seed 0's place
    # The modes ran in their own folders, each recording the behaviour it was asked for.
    configs = {mode: json.loads((tmp_path / "runs" / mode / "repro" / where / "digits" / "config.json").read_text())
               for mode, where in (("corrected", ""), ("original", "seed1"))}
    assert configs["corrected"]["mode"] == "corrected" and configs["original"]["mode"] == "original"

    rows = [line.split("\t") for line in (tmp_path / "repro" / "wall_times.tsv").read_text().splitlines()]
    assert rows[0][:4] == ["dataset", "mode", "seed", "wall_s"] and rows[0][-2:] == ["commit", "command"]
    assert [row[:3] for row in rows[1:]] == [["digits", "corrected", "0"], ["digits", "original", "1"]]
    assert all(int(row[3]) >= 0 and "run_grid.py" in row[-1] for row in rows[1:])
    head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert all(row[-2].startswith(head) for row in rows[1:])  # the code's commit, "+modified" if it has changes
    environment = (tmp_path / "repro" / "environment.txt").read_text()
    assert "torch: " in environment and "numpy==" in environment
    assert "--original_quirks" in rows[2][-1] and "--original_quirks" not in rows[1][-1]

    again = campaign(tmp_path, "digits:corrected:0 digits:corrected:0:DIAM")
    assert again.returncode == 0 and again.stdout.count("done already") == 2 and "run_grid.py:" not in again.stdout

    # A piece of another method on a finished seed (an exploratory one) reuses its run folder and
    # lands beside the seed's other methods, with a line of its own.
    more = campaign(tmp_path, "digits:corrected:0:margin")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert (results / "corrected/2/digits/margin/1/performances.txt").is_file()
    assert (results / "corrected/2/digits/DIAM/1/performances.txt").is_file()
    rows = [line.split("\t") for line in (tmp_path / "repro" / "wall_times.tsv").read_text().splitlines()]
    assert rows[-1][:3] == ["digits", "corrected", "0"] and "--methods margin --seeds" in rows[-1][-1]
    assert "already done" in more.stdout  # iteration 0's nets were not trained again

    # report.sh redraws the tables and curves from the results alone, each mode under its name, and
    # puts the tables into the report that shows them.
    shown = tmp_path / "report.md"
    shown.write_text("# Report\n<!-- reproduction/what_ran.md, as report.sh wrote it -->\nstale\n"
                     "<!-- end of reproduction/what_ran.md -->\ntext\n<!-- reproduction/table.txt, as report.sh "
                     "wrote it -->\n<!-- end of reproduction/table.txt -->\nend\n")
    report = subprocess.run(["bash", str(PROJECT / "reproduction" / "report.sh")], capture_output=True, text=True,
                            env={**campaign_env(tmp_path, "digits:corrected:0 digits:original:1 digits:corrected:1"),
                                 "RESULTS_DIR": str(results), "REPORT": str(shown)}, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert shown.read_text() == (
        "# Report\n<!-- reproduction/what_ran.md, as report.sh wrote it -->\n"
        + (tmp_path / "repro" / "what_ran.md").read_text().rstrip("\n") + "\n\n<!-- end of reproduction/what_ran.md -->\n"
        "text\n<!-- reproduction/table.txt, as report.sh wrote it -->\n```text\n"
        + (tmp_path / "repro" / "table.txt").read_text().rstrip("\n") + "\n```\n<!-- end of reproduction/table.txt -->\nend\n")
    # The reading's numbers, from the same results: seed 0's DIAM minus random in the corrected mode.
    corrected = results_module.load_results(results / "corrected")
    lead = analysis.paired_aulc_differences(corrected.runs[(2, "digits", "DIAM")], corrected.runs[(2, "digits", "random")])
    reading = (tmp_path / "repro" / "reading.txt").read_text()
    assert "=== corrected, digits, T = 2: seeds 0 (1 of 2 planned) ===" in reading
    assert f"  random: {lead[0]:+.2f} (1 seed); positive in {int(lead[0] > 0)} of 1; 0: {lead[0]:+.2f}" in reading
    # What ran, against the plan the campaign was given: each set of methods on a row of its own.
    what_ran = [line.strip("| ").split(" | ") for line in (tmp_path / "repro" / "what_ran.md").read_text().splitlines()]
    assert [cells[:5] for cells in what_ran[2:]] == [
        ["digits", "corrected", "random DIAM", "1 of 2 (0)", f"{int(rows[1][3]):,} s"],
        ["digits", "corrected", "margin", "1 (not in the plan) (0)", f"{int(rows[3][3]):,} s"],
        ["digits", "original", "random", "1 of 1 (1)", f"{int(rows[2][3]):,} s"]]
    assert all(cells[5] and cells[5] != "-" for cells in what_ran[2:])  # the machine each ran on
    # A cell's verdict words wait for its planned pieces (report.sh passes what_ran.py --unfinished's cells
    # to table.py --interim); a cell without results has no words to hold back.
    assert "withheld until the cell has all its planned seeds" in reading.split("=== original")[0]
    for plan, unfinished in (("digits:corrected:0:random,DIAM digits:original:1:random", ""),
                             ("digits:corrected:0:random,DIAM digits:corrected:1:random,DIAM", "corrected/digits"),
                             ("digits:corrected:0:random,DIAM digits:original:1:random digits:original:2:random "
                              "digits:corrected:1:margin fmnist:corrected:0:random,DIAM",
                              "corrected/digits original/digits")):
        check = subprocess.run([sys.executable, str(PROJECT / "reproduction" / "what_ran.py"), "--unfinished",
                                "--times", str(tmp_path / "repro" / "wall_times.tsv"), "--planned", plan],
                               capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout == unfinished + "\n", plan
    refused = subprocess.run([sys.executable, str(PROJECT / "reproduction" / "what_ran.py"), "--planned", "digits:corrected"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "a planned piece is DATASET:MODE:SEED:METHOD" in refused.stderr
    assert "Traceback" not in refused.stderr
    (tmp_path / "cut.tsv").write_text("\n".join(line.rsplit("\t", 1)[0] for line in
                                               (tmp_path / "repro" / "wall_times.tsv").read_text().splitlines()))
    refused = subprocess.run([sys.executable, str(PROJECT / "reproduction" / "what_ran.py"), "--times",
                              str(tmp_path / "cut.tsv")], capture_output=True, text=True)
    assert refused.returncode == 1 and "lacks the column(s) command" in refused.stderr, refused.stderr
    # --out writes what the table prints; a refused tsv leaves the file there as it was, no temp beside it.
    written, plan = tmp_path / "out" / "what_ran.md", "digits:corrected:0:random,DIAM"
    command = [sys.executable, str(PROJECT / "reproduction" / "what_ran.py"), "--planned", plan, "--times"]
    printed = subprocess.run(command + [str(tmp_path / "repro" / "wall_times.tsv")], capture_output=True, text=True)
    subprocess.run(command + [str(tmp_path / "repro" / "wall_times.tsv"), "--out", str(written)], check=True)
    assert printed.stdout.startswith("| dataset | mode | methods |") and written.read_text() == printed.stdout
    refused = subprocess.run(command + [str(tmp_path / "cut.tsv"), "--out", str(written)], capture_output=True)
    assert refused.returncode == 1 and written.read_text() == printed.stdout
    assert [p.name for p in written.parent.iterdir()] == ["what_ran.md"]
    table = (tmp_path / "repro" / "table.txt").read_text()
    assert table.index("=== corrected") < table.index("=== original") and table.count("digits:") == 2
    latex = (tmp_path / "repro" / "table.tex").read_text()
    assert latex.count("Random &") == 2 and all(line.startswith("%") or line.endswith("\\\\")
                                                 for line in latex.splitlines() if line.strip())
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "repro" / f"lc_digits{suffix}").stat().st_size > 0


def test_a_malformed_piece_is_refused_before_anything_runs(tmp_path):
    for piece, message in (("digits:corrected", "a piece is DATASET:MODE:SEED"),
                           ("digits:sloppy:0", "unknown mode 'sloppy'"),
                           ("team/dataset.json:corrected:0", "names a file as its dataset")):
        refused = campaign(tmp_path, piece)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "runs").exists()


def reading(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "reproduction" / "reading.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_the_reading_gives_each_seeds_difference_and_what_the_spread_implies(tmp_path):
    write_seed_tree(tmp_path / "corrected")  # 4 seeds; DIAM ahead of random by diam_gain from round 2
    found = reading("--results", str(tmp_path), "--model_num", "2", "--paper", "none",
                    "--planned", " ".join(f"digits:corrected:{s}:random,DIAM" for s in range(6)))
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert "=== corrected, digits, T = 2: seeds 0-3 (4 of 6 planned) ===" in lines
    # DIAM is built ahead of random and, by exactly 2 points, of CAL: the plan's words say so, unless held back.
    assert "the plan's answer: DIAM leads random and leads CAL" in lines
    held = reading("--results", str(tmp_path), "--model_num", "2", "--paper", "none", "--planned", "", "--interim")
    assert "the plan's answer: withheld until the cell has all its planned seeds (interim)" in held.stdout.splitlines()
    assert "leads" not in held.stdout
    leads = {s: sum(diam_gain(s, i) for i in range(4)) / 4 for s in range(4)}
    sd = statistics.mean_with_ci(list(leads.values()))
    line = next(line for line in lines if line.startswith("  random: "))
    assert line.endswith("; " + ", ".join(f"{s}: {v:+.2f}" for s, v in leads.items()))
    assert line.startswith(f"  random: {sd.mean:+.2f} [{sd.low:+.2f}, {sd.high:+.2f}] (4 seeds); positive in 4 of 4")
    spread = float(np.std(list(leads.values()), ddof=1))
    # The power line clears Holm's strictest step over the family (DIAM against the 4 others: 0.05 / 4).
    assert (f"a 95% CI half-width of {statistics.expected_half_width(spread, 6):.2f} at the planned 6 seeds; "
            f"80% power for a 1-point lead at {statistics.seeds_for_power(spread, 1.0, alpha=0.0125)} seeds; "
            f"80% power for a 0.5-point lead at {statistics.seeds_for_power(spread, 0.5, alpha=0.0125)} seeds "
            "(two-sided 0.05/4, Holm's strictest step over the family)") in found.stdout
    # With the paper's numbers: its own AULC over the same four points, DIAM's lead taken unrounded.
    paper = reading("--results", str(tmp_path), "--model_num", "2", "--planned", "")
    assert paper.returncode == 0, paper.stderr
    tree = results_module.load_results(PROJECT / "extracted_results")
    curve = {m: analysis.learning_curve(tree.runs[(2, "kmnist", m)][0]).mean_top1[:4].mean() for m in ("DIAM", "random")}
    assert f"DIAM minus random {curve['DIAM'] - curve['random']:+.2f}" in paper.stdout.split("kmnist")[1]
    refused = reading("--results", str(tmp_path), "--model_num", "2", "--paper", str(tmp_path / "corrected"),
                      "--planned", "")
    assert refused.returncode == 2 and "is not the paper's results folder" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_reading_sets_diams_leads_in_two_presets_trees_side_by_side(tmp_path):
    # The fourth edition's budget effect: cell (a) in the budget tree, cell (c) in the repro tree, each
    # tree's leads paired within it and shown as two intervals, on the datasets both trees hold.
    write_seed_tree(tmp_path / "budget" / "corrected")  # seeds 0-3, digits
    write_seed_tree(tmp_path / "budget" / "corrected", seeds=(0,), dataset="fmnist")  # in one tree only
    write_seed_tree(tmp_path / "repro" / "corrected", seeds=(0, 1, 2), methods=("DIAM", "random"))
    found = reading("--results", str(tmp_path / "budget"), "--beside", str(tmp_path / "repro"), "--model_num", "2",
                    "--paper", "none", "--planned", "")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    start = lines.index("=== corrected, digits, T = 2: DIAM against random and CAL in each preset's tree, side by "
                        "side (not paired: different presets, pools and seeds) ===")

    def lead(seeds, minus):  # DIAM's AULC minus the method's over al_iter 0-3, per seed, as the tree is built
        return [sum(model_mean("DIAM", s, i) - model_mean(minus, s, i) for i in range(4)) / 4 for s in seeds]

    def shown(values):
        e = statistics.mean_with_ci(values)
        return f"{e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}] ({e.n} seeds)"

    first = np.mean([model_mean("random", s, 0) for s in range(4)])
    assert lines[start + 1] == (f"  {tmp_path / 'budget'} (AULC over al_iter 0-3): iteration 0 {first:.2f}; minus random "
                                f"{shown(lead(range(4), 'random'))}; minus CAL {shown(lead(range(4), 'CAL'))}")
    first = np.mean([model_mean("random", s, 0) for s in range(3)])
    assert lines[start + 2] == (f"  {tmp_path / 'repro'} (AULC over al_iter 0-3): iteration 0 {first:.2f}; minus random "
                                f"{shown(lead(range(3), 'random'))}")
    assert "fmnist, T = 2: DIAM against" not in found.stdout  # held by one tree only: nothing beside it
    alone = reading("--results", str(tmp_path / "budget"), "--model_num", "2", "--paper", "none", "--planned", "")
    assert alone.returncode == 0 and "side by side" not in alone.stdout


def test_embedding_refuses_an_unclosed_block_and_leaves_the_report_as_it_was(tmp_path):
    (tmp_path / "table.txt").write_text("numbers\n")
    report = tmp_path / "report.md"
    text = "<!-- reproduction/table.txt, as report.sh wrote it -->\nold\n<!-- end of reproduction/table.tx -->\n"
    report.write_text(text)
    embed = [sys.executable, str(PROJECT / "reproduction" / "embed.py"), str(report), "--folder", str(tmp_path)]
    refused = subprocess.run(embed, capture_output=True, text=True)
    assert refused.returncode == 1 and "close with `<!-- end of reproduction/NAME -->`" in refused.stderr
    assert report.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "table.txt"]
    report.write_text(text.replace("table.tx ", "table.txt "))
    assert subprocess.run(embed, capture_output=True).returncode == 0
    assert "```text\nnumbers\n```\n" in report.read_text() and "old" not in report.read_text()


def test_embedding_shows_a_subfolders_file_and_refuses_a_path_out_of_the_folder(tmp_path):
    (tmp_path / "fourth_edition" / "budget").mkdir(parents=True)
    (tmp_path / "fourth_edition" / "budget" / "what_ran.md").write_text("| a | b |\n")
    report = tmp_path / "report.md"
    block = "<!-- reproduction/{0}, as report.sh wrote it -->\nold\n<!-- end of reproduction/{0} -->\n"
    report.write_text(block.format("fourth_edition/budget/what_ran.md"))
    embed = [sys.executable, str(PROJECT / "reproduction" / "embed.py"), str(report), "--folder", str(tmp_path)]
    assert subprocess.run(embed, capture_output=True).returncode == 0
    assert report.read_text() == block.format("fourth_edition/budget/what_ran.md").replace("old\n", "| a | b |\n\n")
    outside = block.format("../what_ran.md")
    report.write_text(outside)
    refused = subprocess.run(embed, capture_output=True, text=True)
    assert refused.returncode == 1 and "a path out of the folder" in refused.stderr and report.read_text() == outside


def test_the_fourth_editions_progress_is_what_ran_alone(tmp_path):
    # PROGRESS=1 writes each preset's what_ran.md from its tsv against the plan and reads no result: a
    # tree with no extracted_results at all is enough. Another RESULTS_ROOT leaves REPRODUCTION.md alone.
    budget = tmp_path / "fourth" / "budget"
    budget.mkdir(parents=True)
    (budget / "wall_times.tsv").write_text(
        "dataset\tmode\tseed\twall_s\tstarted\tmachine\tload_start\tload_end\tcommit\tcommand\n"
        "kmnist10k\tcorrected\t0\t7748\t2026-12-07T14:06:54Z\tAMD EPYC, 2 CPUs\t0 0 0\t2 2 2\t4b4cf4d\tpython "
        "run_grid.py --preset budget --datasets kmnist10k --model_nums 4 --methods random entropy CAL DIAM --seeds 0\n")
    before = (PROJECT / "REPRODUCTION.md").read_text()
    done = subprocess.run(["bash", str(PROJECT / "reproduction" / "fourth_edition.sh")], capture_output=True, text=True,
                          env={**os.environ, "PROGRESS": "1", "PYTHON": sys.executable,
                               "RESULTS_ROOT": str(tmp_path / "fourth")}, timeout=120)
    assert done.returncode == 0, done.stderr
    what_ran = (budget / "what_ran.md").read_text()
    assert "| kmnist10k | corrected | random entropy CAL DIAM | 1 of 16 (0) | 7,748 s | AMD EPYC |" in what_ran
    assert "| kmnist10k | corrected | lewis_oneshot | 0 of 16 | 0 s | - |" in what_ran
    assert sorted(p.name for p in budget.iterdir()) == ["wall_times.tsv", "what_ran.md"]
    assert not (tmp_path / "fourth" / "repro").exists()
    assert (PROJECT / "REPRODUCTION.md").read_text() == before


def test_a_campaign_runs_the_preset_it_is_given(tmp_path):
    # The fourth edition's cells run other presets than repro (reproduction/fourth_edition.sh). This piece
    # was stopped part-way before, after 1,000 s: its wall time goes on from there.
    (tmp_path / "runs" / "corrected").mkdir(parents=True)
    elapsed = tmp_path / "runs" / "corrected" / ".elapsed_digits_seed0_random"
    elapsed.write_text("1000\n")
    done = campaign(tmp_path, "digits:corrected:0:random", PRESET="quick")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "runs" / "corrected" / "quick" / "digits" / "config.json").is_file()
    assert not (tmp_path / "runs" / "corrected" / "repro").exists()
    results = tmp_path / "repro" / "extracted_results" / "corrected" / "2" / "digits" / "random"
    assert (results / "1" / "performances.txt").is_file()
    row = (tmp_path / "repro" / "wall_times.tsv").read_text().splitlines()[-1].split("\t")
    assert "--preset quick" in row[-1]
    # The command names its paths relative to the project (given absolute here), the same on any machine.
    words = row[-1].split()
    assert not [word for word in words if word.startswith("/")], row[-1]
    assert (PROJECT / words[0]).resolve() == Path(sys.executable).resolve()
    assert (PROJECT / words[words.index("--work_dir") + 1]).resolve() == (tmp_path / "runs" / "corrected").resolve()
    assert "resumed; 1000 s of this piece ran before" in done.stdout and int(row[3]) >= 1000
    assert not elapsed.exists()


def test_the_fourth_editions_driver_lists_the_plans_pieces_in_its_order():
    listed = subprocess.run(["bash", str(PROJECT / "reproduction" / "fourth_edition.sh")],
                            env={**os.environ, "LIST": "1"}, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    seeds = {}
    for cell, preset, piece in rows:
        dataset, mode, seed, methods = piece.split(":")
        seeds.setdefault((cell, preset, dataset, methods), []).append(int(seed))
        assert mode == "corrected"
    # Cell a's seven methods in two pieces a seed (each about half a session), the four of b and c first.
    assert seeds == {("a", "budget", "kmnist10k", "random,entropy,CAL,DIAM"): list(range(16)),
                     ("a", "budget", "kmnist10k", "least_conf,margin,coreset"): list(range(16)),
                     ("a", "budget", "kmnist10k", "lewis_oneshot"): list(range(16)),
                     ("c", "repro", "kmnist10k", "random,entropy,CAL,DIAM"): list(range(14)),
                     ("c", "repro", "kmnist10k", "badge,bald"): list(range(14)),
                     ("b", "budget", "mnist10k", "random,entropy,CAL,DIAM"): list(range(10)),
                     ("d", "paper32", "fmnist", "random,CAL,DIAM"): list(range(5))}
    # Seeds outer over the primary cell and the low-budget one, then (b), then (d).
    assert [row[0] for row in rows[:5]] == ["a", "a", "a", "c", "c"] and rows[5][2].startswith("kmnist10k:corrected:1:")
    assert [row[0] for row in rows[-15:]] == ["b"] * 10 + ["d"] * 5
    refused = subprocess.run(["bash", str(PROJECT / "reproduction" / "fourth_edition.sh")],
                             env={**os.environ, "CELLS": "a e"}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unknown cell 'e'" in refused.stderr


def test_a_piece_of_other_methods_at_a_seed_keeps_the_results_an_earlier_machine_recorded(tmp_path):
    # The fourth edition runs a seed's methods as pieces that may finish in different sessions: the
    # second piece's run folder (a new machine's) holds only its own methods, and must not wipe the first's.
    first = campaign(tmp_path, "digits:corrected:0:random", WORK_DIR=str(tmp_path / "machine1"))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = campaign(tmp_path, "digits:corrected:0:DIAM", WORK_DIR=str(tmp_path / "machine2"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    results = tmp_path / "repro" / "extracted_results" / "corrected" / "2" / "digits"
    assert sorted(p.name for p in results.iterdir()) == ["DIAM", "random"]
    for method in ("DIAM", "random"):
        assert (results / method / "1" / "performances.txt").is_file()
        # What each selection printed outlives the machine too (the Lewis methods' regime is in it).
        log = tmp_path / "repro" / "selection_logs" / "corrected" / "digits" / method / "iter0.log"
        assert f"--method {method}" in log.read_text() and "al_select.py" in log.read_text()
    # Both pieces recorded: the seed's two methods are done, so neither runs again.
    again = campaign(tmp_path, "digits:corrected:0:random,DIAM", WORK_DIR=str(tmp_path / "machine3"))
    assert again.returncode == 0 and "done already" in again.stdout
    assert not (tmp_path / "machine3" / "corrected").exists()


def test_a_piece_whose_grid_lost_a_method_records_none_of_its_methods(tmp_path):
    # A grid that exits 0 without one of its methods' results (a folder removed under it) must not
    # leave the piece half-recorded: the methods that did finish would otherwise sit in the results
    # tree with no wall-time row, and a later piece at the seed would be read beside them.
    python = tmp_path / "python"
    lost = tmp_path / "runs" / "corrected" / "repro" / "extracted_results" / "2" / "digits" / "DIAM"
    python.write_text(f'#!/bin/bash\n"{sys.executable}" "$@" || exit\nrm -rf "{lost}"\n')
    python.chmod(0o755)
    piece = campaign(tmp_path, "digits:corrected:0:random,DIAM", PYTHON=str(python))
    assert piece.returncode != 0 and "DIAM is missing after the grid finished" in piece.stderr
    assert (tmp_path / "runs" / "corrected" / "repro" / "extracted_results" / "2" / "digits" / "random").is_dir()
    assert not (tmp_path / "repro" / "extracted_results" / "corrected" / "2" / "digits" / "random").exists()
    assert not (tmp_path / "repro" / "selection_logs").exists()
    assert not (tmp_path / "repro" / "wall_times.tsv").exists() or \
        len((tmp_path / "repro" / "wall_times.tsv").read_text().splitlines()) <= 1


def test_the_fourth_editions_report_is_drawn_against_its_own_plan(tmp_path):
    # DRAW=1 hands report.sh each preset's tree with that preset's planned pieces (not the third
    # edition's): three seeds of cell a's first half are 3 of 16, its second half none, verdicts held back.
    from test_results_plot_table import write_tree
    from test_statistics import model_mean
    budget = tmp_path / "fourth" / "budget"
    four = ("random", "entropy", "CAL", "DIAM")
    rows = ["dataset\tmode\tseed\twall_s\tstarted\tmachine\tload_start\tload_end\tcommit\tcommand"]
    for seed in (0, 1, 2):
        write_tree(budget / "extracted_results" / "corrected" / ("" if seed == 0 else f"seed{seed}"),
                   {(4, "kmnist10k", m): {i: [model_mean(m, seed, i)] * 4 for i in range(4)} for m in four})
        rows.append(f"kmnist10k\tcorrected\t{seed}\t100\t2026-12-07T14:00:00Z\tAMD EPYC, 2 CPUs\t0 0 0\t2 2 2\t4b4cf4d"
                    f"\tpython run_grid.py --preset budget --datasets kmnist10k --model_nums 4 --methods "
                    f"{' '.join(four)} --seeds {seed} --work_dir runs/fourth_edition/budget/corrected")
    (budget / "wall_times.tsv").write_text("\n".join(rows) + "\n")
    # A one-shot selection's log as campaign.sh keeps it: its regime line goes into the reading.
    logs = budget / "selection_logs" / "corrected" / "seed10" / "kmnist10k" / "lewis_oneshot"
    logs.mkdir(parents=True)
    (logs / "iter0.log").write_text(
        "--- 2026-12-07 vm pid 1: python al_select.py --method lewis_oneshot --al_iter 0\nlewis_oneshot selected 1200 "
        "of 7200 unlabeled at once from iteration 0's nets in 3.10s (400 more for each of al_iter 1-3; wrote "
        "iteration(s) 1, 2, 3); sum of maximum Lewis weights over the unlabeled pool 1187.4 for a sample of 1200 "
        "(p = 2, last nets, with_replacement sampler, 1391 draws): runs/x\n")
    (logs.parent.parent.parent / "seed2" / "kmnist10k" / "lewis_oneshot").mkdir(parents=True)
    (logs.parent.parent.parent / "seed2" / "kmnist10k" / "lewis_oneshot" / "iter0.log").write_text(
        "sum of maximum Lewis weights over the unlabeled pool 1190.0 for a sample of 1200 (p = 2, last nets, "
        "with_replacement sampler, 1402 draws)\n")
    # Cell (c), KMNIST at the repro preset, two seeds: the budget tree's reading sets it beside cell (a).
    repro = tmp_path / "fourth" / "repro"
    for seed in (0, 1):
        write_tree(repro / "extracted_results" / "corrected" / ("" if seed == 0 else f"seed{seed}"),
                   {(4, "kmnist10k", m): {i: [model_mean(m, seed, i)] * 4 for i in range(4)} for m in four})
    (repro / "wall_times.tsv").write_text(rows[0] + "\n" + "".join(
        row.replace("budget", "repro") + "\n" for row in rows[1:3]))
    drawn = subprocess.run(["bash", str(PROJECT / "reproduction" / "fourth_edition.sh")], capture_output=True, text=True,
                           env={**os.environ, "DRAW": "1", "PYTHON": sys.executable,
                                "RESULTS_ROOT": str(tmp_path / "fourth")}, timeout=300)
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    what_ran = (budget / "what_ran.md").read_text()
    assert "| kmnist10k | corrected | random entropy CAL DIAM | 3 of 16 (0, 1, 2) | 300 s |" in what_ran
    assert "| kmnist10k | corrected | least_conf margin coreset | 0 of 16 | 0 s | - |" in what_ran
    assert "| mnist10k | corrected | random entropy CAL DIAM | 0 of 10 |" in what_ran  # cell b shares the preset
    assert "repro" not in what_ran and "digits" not in what_ran  # the other presets' and editions' plans stay out
    reading = (budget / "reading.txt").read_text()
    assert "=== corrected, kmnist10k, T = 4: seeds 0-2 (3 of 16 planned) ===" in reading
    assert "withheld until the cell has all its planned seeds" in reading
    regime = reading.split("=== the Lewis methods' regime")[1].splitlines()
    assert regime[1:3] == [  # seed 2 before seed 10
        "  corrected/seed2/kmnist10k/lewis_oneshot/iter0: 1190.0 for a sample of 1200 (p = 2, last nets, "
        "with_replacement sampler, 1402 draws)",
        "  corrected/seed10/kmnist10k/lewis_oneshot/iter0: 1187.4 for a sample of 1200 (p = 2, last nets, "
        "with_replacement sampler, 1391 draws)"]
    assert (budget / "table.txt").is_file() and not (tmp_path / "fourth" / "paper32").exists()
    beside = reading.split("DIAM against random and CAL in each preset's tree, side by side")[1].splitlines()
    assert beside[1].startswith(f"  {budget / 'extracted_results'} (AULC over al_iter 0-3): iteration 0 ")
    assert beside[1].endswith("(3 seeds)") and beside[2].endswith("(2 seeds)")
    assert beside[2].startswith(f"  {repro / 'extracted_results'} (AULC over al_iter 0-3): iteration 0 ")
    assert "=== corrected, kmnist10k, T = 4: seeds 0-1 (2 of 14 planned) ===" in (repro / "reading.txt").read_text()
