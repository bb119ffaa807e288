"""SPEC.md section 6: the results layout, the paper's table and figure, from the shipped numbers."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diam import analysis, presets, results
from diam.presets import PAPER_MODEL_NUMS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PAPER_TREE = PROJECT_ROOT / "extracted_results"


def write_tree(root: Path, runs: dict) -> Path:
    """runs: (T, dataset, method) -> {al_iter: list of T top-1 accuracies}; top-5 is top-1 + 1."""
    for (model_num, dataset, method), per_iteration in runs.items():
        for iteration, top1 in per_iteration.items():
            assert len(top1) == model_num
            folder = root / str(model_num) / dataset / method / str(iteration)
            folder.mkdir(parents=True)
            rows = "".join(f"{a:.6f} {min(a + 1, 100):.6f}\n" for a in top1)
            (folder / results.PERFORMANCES_FILE).write_text(rows)
    return root


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / script), *args],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
    )


# Two models, three iterations; per iteration (mean, population std) of top-1:
#   DIAM:   (91, 1), (96, 2), (95, 0)  -> cell 94 ± 1
#   random: (91, 1), (92, 0), (96, 3)  -> cell 93 ± 4/3
SMALL_RUNS = {
    (2, "mnist", "DIAM"): {0: [90, 92], 1: [94, 98], 2: [95, 95]},
    (2, "mnist", "random"): {0: [90, 92], 1: [92, 92], 2: [93, 99]},
}


@pytest.fixture
def small_tree(tmp_path):
    return write_tree(tmp_path / "runs", SMALL_RUNS)


def test_learning_curve_is_mean_and_population_std_across_models(small_tree):
    tree = results.load_results(small_tree)
    curve = analysis.learning_curve(tree.accuracies[(2, "mnist", "DIAM")])
    np.testing.assert_array_equal(curve.iterations, [0, 1, 2])
    np.testing.assert_allclose(curve.mean_top1, [91, 96, 95])
    np.testing.assert_allclose(curve.std_top1, [1, 2, 0])  # ddof=0, as the authors' table.py


def test_table_cell_is_mean_over_iterations_and_best_mean_is_marked(small_tree):
    tree = results.load_results(small_tree)
    table = analysis.dataset_table(tree, "mnist", [2], ["DIAM", "random"])
    diam, random = table.cells[("DIAM", 2)], table.cells[("random", 2)]
    assert (diam.mean, diam.std) == pytest.approx((94.0, 1.0))
    assert (random.mean, random.std) == pytest.approx((93.0, 4 / 3))
    assert diam.best and not random.best
    assert diam.complete and random.complete


def test_table_script_prints_best_with_star_and_latex_bold(small_tree):
    plain = run_script("table.py", "--results", str(small_tree), "--model_nums", "2")
    assert plain.returncode == 0, plain.stderr
    rows = {line.split()[0]: line for line in plain.stdout.splitlines() if line.startswith(("DIAM", "Random"))}
    assert "94.00 ± 1.00*" in rows["DIAM"]
    assert "93.00 ± 1.33" in rows["Random"] and "*" not in rows["Random"]

    latex = run_script("table.py", "--results", str(small_tree), "--model_nums", "2", "--latex")
    assert latex.returncode == 0, latex.stderr
    assert "DIAM & $\\bm{94.00 \\pm 1.00}$ \\\\" in latex.stdout
    assert "Random & $93.00 \\pm 1.33$ \\\\" in latex.stdout


def test_table_prints_each_tree_of_a_folder_of_trees_under_its_name(tmp_path):
    # The reproduction keeps its corrected and original-quirks runs in two trees side by side.
    write_tree(tmp_path / "both" / "corrected", SMALL_RUNS)
    swapped = {(2, "mnist", "DIAM"): SMALL_RUNS[(2, "mnist", "random")],
               (2, "mnist", "random"): SMALL_RUNS[(2, "mnist", "DIAM")]}
    write_tree(tmp_path / "both" / "original", swapped)
    (tmp_path / "both" / "notes").mkdir()  # a folder that is not a tree is passed over

    parts = results.load_result_parts(tmp_path / "both")
    assert [label for label, _ in parts] == ["corrected", "original"]
    assert results.load_result_parts(tmp_path / "both" / "original")[0][0] == ""  # a tree is one unnamed part

    shown = run_script("table.py", "--results", str(tmp_path / "both"), "--model_nums", "2")
    assert shown.returncode == 0, shown.stderr
    corrected, original = shown.stdout.split("=== original")
    assert corrected.startswith("=== corrected")
    assert "94.00 ± 1.00*" in next(line for line in corrected.splitlines() if line.startswith("DIAM"))
    assert "94.00 ± 1.00*" in next(line for line in original.splitlines() if line.startswith("Random"))
    assert "*" not in next(line for line in original.splitlines() if line.startswith("DIAM"))


def test_table_datasets_flag_passes_over_a_tree_holding_none_of_them(tmp_path):
    # The original-quirks tree covers one dataset only; asking for the other must not fail on it.
    write_tree(tmp_path / "both" / "corrected", {**SMALL_RUNS, (2, "kmnist", "DIAM"): {0: [70, 72]}})
    write_tree(tmp_path / "both" / "original", SMALL_RUNS)

    shown = run_script("table.py", "--results", str(tmp_path / "both"), "--datasets", "kmnist")
    assert shown.returncode == 0, shown.stderr
    assert "=== corrected" in shown.stdout and "=== original" not in shown.stdout
    assert "71.00 ± 1.00" in shown.stdout
    assert "original holds none of kmnist; not shown" in shown.stderr

    nowhere = run_script("table.py", "--results", str(tmp_path / "both"), "--datasets", "fmnist")
    assert nowhere.returncode != 0 and "Traceback" not in nowhere.stderr
    assert "no results in" in nowhere.stderr and "for fmnist; it holds mnist, kmnist" in nowhere.stderr


def test_missing_models_methods_and_iterations_are_reported(tmp_path):
    runs = {
        (2, "mnist", "DIAM"): {0: [90, 92], 1: [94, 98], 2: [95, 95]},
        # random stops at al_iter 1, with means above DIAM's: a partial cell must not win
        (2, "mnist", "random"): {0: [99, 99], 1: [99, 99]},
        (4, "kmnist", "DIAM"): {0: [80, 80, 80, 80]},
    }
    root = write_tree(tmp_path / "runs", runs)
    broken = root / "2" / "mnist" / "margin" / "0" / results.PERFORMANCES_FILE
    broken.parent.mkdir(parents=True)
    broken.write_text("97.0 99.0\n")  # one row for T=2 models

    tree = results.load_results(root)
    assert len(tree.skipped) == 1 and "1 rows, but T=2" in tree.skipped[0]
    lines = results.missing_parts(tree, [2, 4, 12], ["mnist", "kmnist"], ["DIAM", "random", "margin"])
    assert "no results at all for T=12" in lines
    assert "T=2: no results for dataset kmnist" in lines
    assert "T=4: no results for dataset mnist" in lines
    assert "T=2 mnist: no results for margin" in lines
    assert "T=2 mnist random: al_iter 2 missing (expected 0-2)" in lines

    table = analysis.dataset_table(tree, "mnist", [2, 4], ["DIAM", "random", "margin"])
    partial = table.cells[("random", 2)]
    assert (partial.iterations_used, partial.iterations_expected) == (2, 3) and not partial.best
    assert table.cells[("DIAM", 2)].best
    assert ("margin", 2) not in table.cells and ("DIAM", 4) not in table.cells

    shown = run_script("table.py", "--results", str(root))
    assert shown.returncode == 0, shown.stderr
    assert "missing: T=2 mnist random: al_iter 2 missing" in shown.stderr
    assert "(2/3 it.)" in shown.stdout and "94.00 ± 1.00*" in shown.stdout

    # A T that only some datasets have is still a table: a column of dashes where it is missing.
    some = run_script("table.py", "--results", str(root), "--model_nums", "4")
    assert some.returncode == 0, some.stderr
    assert "T=4: no results for dataset mnist" in some.stderr and "80.00 ± 0.00*" in some.stdout
    assert next(line for line in some.stdout.splitlines() if line.startswith("DIAM")).split() == ["DIAM", "-"]


@pytest.mark.parametrize("model_nums, message", [
    (["3", "0", "-5"], "--model_nums are numbers of target models T, each 1 or more; got 3 0 -5."),
    (["0"], "got 0."),
    (["3", "12"], "no results in {root} for T=3, 12; it holds T=2, 4. Name some of those with --model_nums"),
    (["4", "--datasets", "mnist"], "no results in {root} for T=4 of mnist; it holds T=2."),
])
def test_table_refuses_model_nums_it_has_no_column_for(tmp_path, model_nums, message):
    root = write_tree(tmp_path / "runs", {**SMALL_RUNS, (4, "kmnist", "DIAM"): {0: [80, 80, 80, 80]}})
    refused = run_script("table.py", "--results", str(root), "--model_nums", *model_nums)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: ") and message.format(root=root) in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr


def test_plot_writes_png_and_pdf_for_a_tree_and_a_comparison(small_tree, tmp_path):
    single = run_script("plot.py", "--results", str(small_tree), "--model_num", "2",
                        "--query_batch", "100", "--out", str(tmp_path / "ours"))
    assert single.returncode == 0, single.stderr
    # compare: paper's T=2 row over ours, kmnist only in the paper's tree
    compared = run_script("plot.py", "--compare", str(small_tree), "--model_num", "2", "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    assert "T=2: no results for dataset kmnist" in compared.stderr
    for prefix in ("ours", "cmp"):
        png, pdf = tmp_path / f"{prefix}.png", tmp_path / f"{prefix}.pdf"
        assert png.read_bytes().startswith(b"\x89PNG") and pdf.read_bytes().startswith(b"%PDF")
        assert str(png) in (single if prefix == "ours" else compared).stdout
    assert not (tmp_path / "ours_penalty.png").exists()  # one seed: no paired tests to draw


def png_rows_of_panels(path) -> int:
    """How many rows of panels a learning-curve PNG holds, from its height (plot.PANEL_SIZE at 150 dpi)."""
    import plot

    height = int.from_bytes(path.read_bytes()[20:24], "big")  # the PNG header's IHDR height
    return round((height / 150 - 0.4) / plot.PANEL_SIZE[1])


def test_plot_each_dataset_draws_a_row_per_tree_of_a_folder_that_holds_it(tmp_path):
    # corrected/ holds mnist and kmnist, original/ only mnist: the kmnist figure has one row.
    write_tree(tmp_path / "both" / "corrected", {**SMALL_RUNS, (2, "kmnist", "DIAM"): {0: [70, 72]}})
    write_tree(tmp_path / "both" / "original", SMALL_RUNS)
    drawn = run_script("plot.py", "--results", str(tmp_path / "both"), "--model_num", "2", "--each_dataset",
                       "--query_batch", "100", "--out", str(tmp_path / "lc"))
    assert drawn.returncode == 0, drawn.stderr
    assert "original) has no results for kmnist at T=2; not drawn" in drawn.stderr
    assert png_rows_of_panels(tmp_path / "lc_mnist.png") == 2
    assert png_rows_of_panels(tmp_path / "lc_kmnist.png") == 1
    assert (tmp_path / "lc_kmnist.pdf").read_bytes().startswith(b"%PDF")
    assert not (tmp_path / "lc.png").exists()


def test_plotted_lines_are_the_tables_numbers(small_tree):
    import plot  # the script's drawing function returns its Figure

    tree = results.load_results(small_tree)
    figure = plot.draw_learning_curves([tree], 2, ["mnist"], query_batch=100)
    ax = figure.axes[0]
    lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert set(lines) == {"DIAM", "Random"}
    table = analysis.dataset_table(tree, "mnist", [2], ["DIAM", "random"])
    for method, per_iteration_means in (("DIAM", [91, 96, 95]), ("random", [91, 92, 96])):
        line = lines[results.method_display_name(method)]
        np.testing.assert_array_equal(line.get_xdata(), [0, 100, 200])
        np.testing.assert_allclose(line.get_ydata(), per_iteration_means)
        assert np.mean(line.get_ydata()) == pytest.approx(table.cells[(method, 2)].mean)
    # the paper's error bars (std across the T models), no CI bands: one tree of one seed
    assert all(type(c).__name__ == "LineCollection" for c in ax.collections) and len(ax.collections) == 4
    # DIAM's up and down arrows together span mean -+ std at each iteration: std 1, 2, 0
    diam_bars = ax.collections[0].get_segments() + ax.collections[1].get_segments()
    for x, mean, std in zip([0, 100, 200], [91, 96, 95], [1, 2, 0]):
        at_x = np.concatenate([segment[:, 1] for segment in diam_bars if segment[0, 0] == x])
        assert (at_x.min(), at_x.max()) == (pytest.approx(mean - std), pytest.approx(mean + std))


def test_paper_numbers_are_shipped_whole_and_marked():
    assert (PAPER_TREE / results.PAPER_RESULTS_MARKER).is_file()
    assert len(list(PAPER_TREE.glob(f"*/*/*/*/{results.PERFORMANCES_FILE}"))) == 770
    tree = results.load_results(PAPER_TREE)
    assert tree.is_paper and tree.skipped == []
    assert tree.model_nums() == list(PAPER_MODEL_NUMS)
    assert tree.datasets() == ["mnist", "kmnist"]
    assert set(tree.methods()) == set(presets.PAPER_METHODS)
    for (model_num, _, _), per_iteration in tree.accuracies.items():
        assert sorted(per_iteration) == list(range(11))
        assert all(a.shape == (model_num, 2) for a in per_iteration.values())


def test_paper_table_uses_every_file_and_diam_is_best_in_every_column():
    tree = results.load_results(PAPER_TREE)
    for dataset in ("mnist", "kmnist"):
        table = analysis.dataset_table(tree, dataset, PAPER_MODEL_NUMS, results.DISPLAY_ORDER)
        assert len(table.cells) == 7 * 5
        assert all(cell.iterations_used == 11 and cell.complete for cell in table.cells.values())
        best = {t: [m for m in table.methods if table.cells[(m, t)].best] for t in PAPER_MODEL_NUMS}
        assert best == {t: ["DIAM"] for t in PAPER_MODEL_NUMS}


@pytest.mark.parametrize("model_num, dataset, method", [(12, "mnist", "DIAM"), (2, "kmnist", "coreset"), (8, "mnist", "CAL")])
def test_paper_table_cell_matches_an_independent_recomputation(model_num, dataset, method):
    top1 = np.array([
        np.loadtxt(PAPER_TREE / str(model_num) / dataset / method / str(i) / "performances.txt")[:, 0]
        for i in range(11)
    ])
    expected_mean = np.mean([row.mean() for row in top1])
    expected_std = np.mean([np.sqrt(np.mean((row - row.mean()) ** 2)) for row in top1])
    cell = analysis.dataset_table(results.load_results(PAPER_TREE), dataset, [model_num], [method]).cells[(method, model_num)]
    assert (cell.mean, cell.std) == pytest.approx((expected_mean, expected_std), rel=1e-12)

    printed = run_script("table.py", "--datasets", dataset)
    assert f"{expected_mean:.2f} ± {expected_std:.2f}" in printed.stdout


@pytest.mark.parametrize("script", ["table.py", "plot.py"])
def test_missing_or_empty_results_folder_is_a_clear_error(script, tmp_path):
    missing = run_script(script, "--results", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: the results folder") and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    (tmp_path / "empty").mkdir()
    empty = run_script(script, "--results", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "holds no results" in empty.stderr and "Traceback" not in empty.stderr


def test_table_and_plot_read_the_papers_tree_by_default():
    # One definition of --results serves both scripts: its default is the shipped tree.
    assert results.PAPER_RESULTS_DIR == PAPER_TREE
    plot = run_script("plot.py", "--model_num", "3")  # refused before drawing, naming the tree it read
    assert plot.returncode == 2 and f"in {PAPER_TREE}; results exist for T=2, 4, 6, 8, 12" in plot.stderr
    table = run_script("table.py", "--model_nums", "12", "--datasets", "mnist")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("MNIST: mean top-1 accuracy (%) over al_iter 0-10")
    table = run_script("table.py", "--model_nums", "3")  # refused, as plot.py's T=3, naming the same tree
    assert table.returncode == 2 and f"no results in {PAPER_TREE} for T=3; it holds T=2, 4, 6, 8, 12" in table.stderr


def test_plot_refuses_to_write_into_the_paper_results_folder(tmp_path):
    for out in (str(PAPER_TREE / "lc"), "extracted_results/x"):  # run_script starts plot.py in the project
        refused = run_script("plot.py", "--out", out)
        assert refused.returncode == 2 and "holds the paper's published results" in refused.stderr
        # The message names plot.py's own flag, not test_multi_models.py's --results_dir.
        assert "Point --out at a folder outside it" in refused.stderr and "--results_dir" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert not list(PAPER_TREE.glob("lc.*")) and not list(PAPER_TREE.glob("x.*"))


def test_a_figure_of_ones_own_runs_goes_beside_them_not_over_the_readmes(small_tree):
    readme_figure = (PROJECT_ROOT / "assets" / "lc.png").read_bytes()
    drawn = run_script("plot.py", "--compare", str(small_tree), "--model_num", "2")
    assert drawn.returncode == 0, drawn.stderr
    beside = small_tree.resolve().parent / "lc.png"
    assert f"wrote {beside}" in drawn.stdout and beside.read_bytes().startswith(b"\x89PNG")
    assert (PROJECT_ROOT / "assets" / "lc.png").read_bytes() == readme_figure


def test_a_reader_that_goes_away_ends_the_table_quietly(small_tree):
    # `table.py | head`: the pipe's reading end is closed before the script writes a word.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        gone = subprocess.run([sys.executable, str(PROJECT_ROOT / "table.py"), "--results", str(small_tree),
                               "--model_nums", "2"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=PROJECT_ROOT, timeout=120)
    finally:
        os.close(write_end)
    assert gone.returncode == 0 and "Traceback" not in gone.stderr and "BrokenPipe" not in gone.stderr
