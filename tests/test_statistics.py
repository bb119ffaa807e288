"""SPEC.md section 9: repeated trials. Seeds in a results tree, confidence intervals across
seeds, the area under the learning curve, BADGE's paired-test penalty matrix and DIAM's
verdict, each checked against numbers computed here from the construction of the tree."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from diam import analysis, results, statistics
from diam.paths import RunPaths
from test_results_plot_table import run_script, write_tree

import plot  # noqa: E402  (the script's drawing functions return their Figure)

MODEL_NUM, DATASET = 2, "digits"
SEEDS = (0, 1, 2, 3)
ITERATIONS = (0, 1, 2, 3)
METHODS = ("DIAM", "CAL", "entropy", "margin", "random")  # the paper's display order
T_975_DOF3 = 3.182446305284263  # Student t, 0.975 quantile, 3 degrees of freedom (printed tables)


def baseline(seed: int, iteration: int) -> float:
    """The T-model mean of random; seeds differ by far more than the methods do, so only a
    test paired by seed can see the methods' gaps."""
    return 50.0 + 10.0 * iteration + 2.0 * seed


def diam_gain(seed: int, iteration: int) -> float:
    """DIAM is built to be significantly better from round 2 on, and equal before."""
    return 0.0 if iteration < 2 else 3.0 + 0.5 * (seed % 2)


def model_mean(method: str, seed: int, iteration: int) -> float:
    b = baseline(seed, iteration)
    if iteration == 0:  # iteration 0 is shared by every method
        return b
    if method == "DIAM":
        return b + diam_gain(seed, iteration)
    if method == "CAL":  # exactly 2 points under DIAM at every seed: zero variance of the difference
        return b + diam_gain(seed, iteration) - 2.0
    if method == "entropy":  # built to tie with random: +0.5 and -0.5 in turn, mean difference 0
        return b + (0.5 if seed % 2 == 0 else -0.5)
    return b  # margin is random itself: all differences 0, ttest_rel gives nan


def write_seed_tree(root, seeds=SEEDS, methods=METHODS, iterations=ITERATIONS, dataset=DATASET):
    """The T = 2 models sit at mean - 1 and mean + 1; seed 0 at the top, seed S in seed<S>/."""
    for seed in seeds:
        write_tree(root if seed == 0 else root / f"seed{seed}", {
            (MODEL_NUM, dataset, method): {
                i: [model_mean(method, seed, i) - 1, model_mean(method, seed, i) + 1] for i in iterations
            }
            for method in methods
        })
    return root


@pytest.fixture
def seed_tree(tmp_path):
    return write_seed_tree(tmp_path / "runs")


def sample_sd(values) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t3_two_sided_p(t: float) -> float:
    """Two-sided p of Student t with 3 degrees of freedom, from its closed-form CDF."""
    x = abs(t) / math.sqrt(3)
    cdf = 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi
    return 2 * (1 - cdf)


# ------------------------------------------------------------------ reading seeds
def test_seed_folders_are_seeds_not_t_folders(seed_tree):
    (seed_tree / "seed01").mkdir()  # not a seed folder: reported, not read
    tree = results.load_results(seed_tree)
    assert tree.seeds() == list(SEEDS) and tree.has_several_seeds
    assert tree.model_nums() == [MODEL_NUM] and tree.datasets() == [DATASET]
    assert set(tree.methods()) == set(METHODS)
    assert len(tree.skipped) == 1 and "seed01" in tree.skipped[0]
    per_seed = tree.runs[(MODEL_NUM, DATASET, "DIAM")]
    assert sorted(per_seed) == list(SEEDS)
    np.testing.assert_allclose(per_seed[3][2][:, 0], [model_mean("DIAM", 3, 2) - 1, model_mean("DIAM", 3, 2) + 1])
    with pytest.raises(ValueError, match="holds seeds"):
        tree.accuracies  # one seed's view of a tree of several would hide the others


def test_results_reads_each_seed_where_the_run_paths_write_it(tmp_path):
    for seed in (0, 1, 12):
        run = RunPaths(tmp_path / "runs", "quick", DATASET, seed=seed)
        path = run.performances(MODEL_NUM, "DIAM", 0)
        path.parent.mkdir(parents=True)
        path.write_text(f"{50 + seed} 90\n{52 + seed} 91\n")
    tree = results.load_results(tmp_path / "runs" / "quick" / "extracted_results")
    assert tree.seeds() == [0, 1, 12] and tree.skipped == []
    assert {seed: a[0][0, 0] for seed, a in tree.runs[(MODEL_NUM, DATASET, "DIAM")].items()} == {0: 50, 1: 51, 12: 62}


def test_a_tree_without_seed_zero_at_the_top_holds_only_its_seed_folders(tmp_path):
    root = write_seed_tree(tmp_path / "runs", seeds=(1, 2))
    tree = results.load_results(root)
    assert tree.seeds() == [1, 2]


def test_a_missing_seed_and_a_missing_iteration_of_one_seed_are_reported(tmp_path):
    root = write_seed_tree(tmp_path / "runs", seeds=(0, 1, 2), methods=("DIAM", "random"))
    write_seed_tree(root, seeds=(0, 2), methods=("entropy",))
    (root / "seed1" / "2" / DATASET / "random" / "3" / results.PERFORMANCES_FILE).unlink()
    tree = results.load_results(root)
    lines = results.missing_parts(tree, [MODEL_NUM], [DATASET], ["DIAM", "entropy", "random"])
    assert lines == [
        "T=2 digits entropy: seed 1 missing (the tree holds seeds 0-2)",
        "T=2 digits random seed 1: al_iter 3 missing (expected 0-3)",
    ]
    shown = run_script("table.py", "--results", str(root), "--model_nums", "2")
    assert shown.returncode == 0, shown.stderr
    assert "missing: T=2 digits entropy: seed 1 missing" in shown.stderr
    entropy_row = next(line for line in shown.stdout.splitlines() if line.startswith("Entropy"))
    assert "(2/3 seeds)" in entropy_row and "*" not in entropy_row


def test_a_dataset_run_at_fewer_seeds_than_another_is_complete_at_its_own(tmp_path):
    # The reproduction's corrected tree: digits at seeds 0-4, Fashion-MNIST at 0-2.
    root = write_seed_tree(tmp_path / "runs", seeds=(0, 1, 2), methods=("DIAM", "random"))
    write_seed_tree(root, seeds=(0, 1), methods=("DIAM", "random"), dataset="fmnist")
    tree = results.load_results(root)
    assert tree.seeds() == [0, 1, 2] and tree.seeds("fmnist") == [0, 1] and tree.seeds(DATASET) == [0, 1, 2]
    assert results.missing_parts(tree, [MODEL_NUM], [DATASET, "fmnist"], ["DIAM", "random"]) == []
    assert analysis.penalty_matrix(tree, MODEL_NUM, "fmnist").seeds == (0, 1)
    shown = run_script("table.py", "--results", str(root), "--model_nums", "2", "--datasets", "fmnist")
    assert shown.returncode == 0, shown.stderr
    assert "mean over seeds 0-1" in shown.stdout and "(2/3 seeds)" not in shown.stdout
    assert "*" in next(line for line in shown.stdout.splitlines() if line.startswith("DIAM"))


# ------------------------------------------------------------------ the statistics
def test_mean_and_ci_across_seeds_agree_with_a_hand_computation_and_scipy():
    values = [model_mean("DIAM", s, 2) for s in SEEDS]
    estimate = statistics.mean_with_ci(values)
    half_width = T_975_DOF3 * sample_sd(values) / math.sqrt(len(values))
    assert (estimate.mean, estimate.n) == (pytest.approx(sum(values) / 4), 4)
    assert estimate.half_width == pytest.approx(half_width, rel=1e-12)
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert (estimate.low, estimate.high) == (pytest.approx(low), pytest.approx(high))


def test_fewer_than_two_seeds_have_no_ci_and_no_test():
    one = statistics.mean_with_ci([71.5])
    assert (one.mean, one.n, one.half_width, one.has_ci) == (71.5, 1, None, False)
    test = statistics.paired_test([70.0, np.nan], [69.0, 68.0])  # one seed in common
    assert (test.n, test.mean_difference, test.p_value, test.testable, test.outcome()) == (1, 1.0, None, False, 0)


def test_paired_t_test_agrees_with_a_hand_computation_and_scipy():
    diam = [model_mean("DIAM", s, 2) for s in SEEDS]
    entropy = [model_mean("entropy", s, 2) for s in SEEDS]
    differences = [a - b for a, b in zip(diam, entropy)]  # 2.5, 4, 2.5, 4
    t = (sum(differences) / 4) / (sample_sd(differences) / 2)
    test = statistics.paired_test(diam, entropy)
    assert test.mean_difference == pytest.approx(3.25)
    assert test.p_value == pytest.approx(t3_two_sided_p(t), rel=1e-9)
    assert test.p_value == pytest.approx(stats.ttest_rel(diam, entropy).pvalue, rel=1e-12)
    assert test.outcome() == 1 and statistics.paired_test(entropy, diam).outcome() == -1


def test_built_to_tie_is_a_tie_and_zero_variance_follows_badges_convention():
    random = [model_mean("random", s, 2) for s in SEEDS]
    entropy = [model_mean("entropy", s, 2) for s in SEEDS]
    tie = statistics.paired_test(entropy, random)
    assert tie.mean_difference == 0 and tie.p_value == pytest.approx(1.0) and tie.outcome() == 0
    # all differences zero: ttest_rel gives nan; no method is better
    margin = [model_mean("margin", s, 2) for s in SEEDS]
    assert np.isnan(stats.ttest_rel(margin, random).pvalue)
    identical = statistics.paired_test(margin, random)
    assert (identical.p_value, identical.outcome()) == (None, 0)
    # the same non-zero difference at every seed: t is infinite, significant
    diam = [model_mean("DIAM", s, 2) for s in SEEDS]
    cal = [model_mean("CAL", s, 2) for s in SEEDS]
    constant = statistics.paired_test(diam, cal)
    assert (constant.p_value, constant.outcome(), statistics.paired_test(cal, diam).outcome()) == (0.0, 1, -1)


def test_seed_curve_is_the_mean_over_seeds_of_the_model_mean_with_its_ci(seed_tree):
    tree = results.load_results(seed_tree)
    curve = analysis.seed_curve(tree.runs[(MODEL_NUM, DATASET, "DIAM")])
    np.testing.assert_array_equal(curve.iterations, ITERATIONS)
    expected = [np.mean([model_mean("DIAM", s, i) for s in SEEDS]) for i in ITERATIONS]
    np.testing.assert_allclose(curve.mean_top1, expected)
    # iteration 1: DIAM's gain is 0, seeds are 2 points apart: sd of 0, 2, 4, 6
    assert curve.half_widths[1] == pytest.approx(T_975_DOF3 * sample_sd([0, 2, 4, 6]) / 2)


def test_aulc_per_seed_and_its_ci_per_method(seed_tree):
    tree = results.load_results(seed_tree)
    table = analysis.dataset_table(tree, DATASET, [MODEL_NUM], METHODS)
    for method in METHODS:
        aulcs = [np.mean([model_mean(method, s, i) for i in ITERATIONS]) for s in SEEDS]
        cell = table.cells[(method, MODEL_NUM)]
        assert cell.mean == pytest.approx(np.mean(aulcs))
        assert cell.aulc.half_width == pytest.approx(T_975_DOF3 * sample_sd(aulcs) / 2)
        assert (cell.seeds_used, cell.seeds_expected, cell.iterations_used) == (4, 4, 4)
        # the cell's mean is also the mean over iterations of the seed-mean curve, as the single-seed table
        curve = analysis.seed_curve(tree.runs[(MODEL_NUM, DATASET, method)])
        assert cell.mean == pytest.approx(curve.mean_top1.mean())
        assert cell.std == pytest.approx(1.0)  # the two models sit 1 point either side of their mean
    assert [m for m in METHODS if table.cells[(m, MODEL_NUM)].best] == ["DIAM"]


def test_penalty_matrix_on_a_constructed_case(seed_tree):
    matrix = analysis.penalty_matrix(results.load_results(seed_tree), MODEL_NUM, DATASET)
    assert matrix.methods == METHODS and matrix.rounds == (1, 2, 3) and matrix.seeds == SEEDS
    # Rounds 1-3. DIAM = CAL + 2 always (constant: significant), and beats the others at rounds 2-3.
    # CAL is 2 under the others at round 1 and 1-1.5 over random and margin at rounds 2-3; against
    # entropy at rounds 2-3 its differences 0.5, 2, 0.5, 2 give p = 0.063: a tie.
    expected = [
        # DIAM CAL entropy margin random
        [0, 3, 2, 2, 2],  # DIAM
        [0, 0, 0, 2, 2],  # CAL
        [0, 1, 0, 0, 0],  # entropy
        [0, 1, 0, 0, 0],  # margin
        [0, 1, 0, 0, 0],  # random
    ]
    np.testing.assert_array_equal(matrix.wins, expected)
    np.testing.assert_array_equal(matrix.tested, 3 * (1 - np.eye(5, dtype=int)))
    # the same matrix from the rule, with p from the closed-form t(3) CDF
    for i, better in enumerate(METHODS):
        for j, worse in enumerate(METHODS):
            count = 0
            for round_ in (1, 2, 3):
                differences = [model_mean(better, s, round_) - model_mean(worse, s, round_) for s in SEEDS]
                mean, sd = np.mean(differences), sample_sd(differences)
                if i != j and mean > 0 and (sd < 1e-9 or t3_two_sided_p(mean / (sd / 2)) < 0.05):
                    count += 1
            assert matrix.wins[i, j] == count, (better, worse)


def test_verdict_is_diam_against_each_method_paired_by_seed(seed_tree):
    verdicts = {v.method: v for v in analysis.verdicts(results.load_results(seed_tree), MODEL_NUM, DATASET)}
    assert list(verdicts) == ["CAL", "entropy", "margin", "random"]
    random = verdicts["random"]
    differences = [np.mean([diam_gain(s, i) for i in ITERATIONS]) for s in SEEDS]  # 1.5, 1.75, 1.5, 1.75
    assert random.aulc_difference.mean == pytest.approx(1.625)
    assert random.aulc_difference.half_width == pytest.approx(T_975_DOF3 * sample_sd(differences) / 2)
    low, high = stats.ttest_rel(
        [np.mean([model_mean("DIAM", s, i) for i in ITERATIONS]) for s in SEEDS],
        [np.mean([model_mean("random", s, i) for i in ITERATIONS]) for s in SEEDS],
    ).confidence_interval(0.95)
    assert (random.aulc_difference.low, random.aulc_difference.high) == (pytest.approx(low), pytest.approx(high))
    assert (random.wins, random.ties, random.losses, random.untested) == (2, 1, 0, 0)
    assert random.iterations == ITERATIONS
    cal = verdicts["CAL"]
    assert (cal.aulc_difference.mean, cal.aulc_difference.half_width) == (pytest.approx(1.5), pytest.approx(0))
    assert (cal.wins, cal.ties, cal.losses) == (3, 0, 0)


# ------------------------------------------------------------------ the scripts
def test_table_prints_mean_and_ci_and_verdicts_plain_and_latex(seed_tree):
    tree = results.load_results(seed_tree)
    cell = analysis.dataset_table(tree, DATASET, [MODEL_NUM], ["DIAM"]).cells[("DIAM", MODEL_NUM)]
    plain = run_script("table.py", "--results", str(seed_tree), "--model_nums", "2")
    assert plain.returncode == 0, plain.stderr
    assert "95% CI half-width across seeds" in plain.stdout
    diam_row = next(line for line in plain.stdout.splitlines() if line.startswith("DIAM "))
    assert f"{cell.mean:.2f} ± {cell.aulc.half_width:.2f}*" in diam_row
    # The regime beside the AULCs: iteration 0 is shared, seeds 2 points apart around 50.
    regime = f"{np.mean([baseline(s, 0) for s in SEEDS]):.2f} ± {T_975_DOF3 * sample_sd([0, 2, 4, 6]) / 2:.2f}"
    assert f"(iteration 0)  {regime}" in plain.stdout
    assert f"T=2: iteration 0 (the regime): {regime} mean top-1; family of 4 comparisons" in plain.stdout
    rows = {line.split()[0]: line.split() for line in plain.stdout.splitlines()  # the verdict rows
            if line.startswith(("Random ", "CAL ", "Entropy ", "Margin ")) and "[" in line}
    # Random: AULC +1.62 [+1.40, +1.85], over al_iter 1-3 4/3 of it, 4 seeds; p < 0.001 raw and after Holm.
    assert rows["Random"][1:] == ["+1.62", "[+1.40,", "+1.85]", "+2.17", "4", "<0.001", "<0.001", "leads", "2/1/0"]
    assert rows["CAL"][1:] == ["+1.50", "[+1.50,", "+1.50]", "+2.00", "4", "<0.001", "<0.001", "leads", "3/0/0"]
    assert rows["Margin"][-2:] == ["leads", "2/1/0"]  # margin is random itself
    assert "penalty matrix (descriptive, uncorrected)" in plain.stdout and "nan" not in plain.stdout
    assert "expected by chance alone" in plain.stdout

    latex = run_script("table.py", "--results", str(seed_tree), "--model_nums", "2", "--latex")
    assert latex.returncode == 0, latex.stderr
    assert f"DIAM & $\\bm{{{cell.mean:.2f} \\pm {cell.aulc.half_width:.2f}}}$ \\\\" in latex.stdout
    assert "2 & Random & $+1.62\\ [+1.40, +1.85]$ & <0.001 & <0.001 & leads & 2/1/0 \\\\" in latex.stdout
    latex_regime = regime.replace("±", "\\pm")
    assert f"(iteration 0) & ${latex_regime}$ \\\\" in latex.stdout


def test_interim_tables_withhold_the_verdict_words_and_keep_the_numbers(seed_tree):
    # The analysis plan draws verdicts once, at its seeds: before then report.sh asks for --interim.
    plain = run_script("table.py", "--results", str(seed_tree), "--model_nums", "2", "--interim")
    assert plain.returncode == 0, plain.stderr
    rows = {line.split()[0]: line.split() for line in plain.stdout.splitlines()
            if line.startswith(("Random ", "CAL ")) and "[" in line}
    assert rows["Random"][1:] == ["+1.62", "[+1.40,", "+1.85]", "+2.17", "4", "<0.001", "<0.001", "interim", "2/1/0"]
    assert rows["CAL"][-2:] == ["interim", "3/0/0"]
    assert "verdict words withheld" in plain.stdout and "leads" not in plain.stdout.split("verdict words withheld")[1]
    latex = run_script("table.py", "--results", str(seed_tree), "--model_nums", "2", "--latex", "--interim")
    assert "2 & Random & $+1.62\\ [+1.40, +1.85]$ & <0.001 & <0.001 & interim & 2/1/0 \\\\" in latex.stdout


def test_interim_holds_back_only_the_cells_it_names_and_refuses_a_name_it_cannot_find(tmp_path):
    # The plan draws a cell's verdicts once that cell has its seeds, whatever the other cells lack.
    for mode in ("corrected", "original"):
        write_seed_tree(tmp_path / "modes" / mode)
    plain = run_script("table.py", "--results", str(tmp_path / "modes"), "--model_nums", "2",
                       "--interim", "corrected/digits")
    assert plain.returncode == 0, plain.stderr
    corrected, original = plain.stdout.split("=== original")
    random_row = [line.split() for line in corrected.splitlines() if line.startswith("Random ") and "[" in line]
    assert random_row[0][-2:] == ["interim", "2/1/0"] and "verdict words withheld" in corrected
    random_row = [line.split() for line in original.splitlines() if line.startswith("Random ") and "[" in line]
    assert random_row[0][-2:] == ["leads", "2/1/0"] and "withheld" not in original
    # A dataset's name alone holds it back in every tree.
    both = run_script("table.py", "--results", str(tmp_path / "modes"), "--model_nums", "2", "--interim", "digits")
    assert both.stdout.count("verdict words withheld") == 2 and " leads " not in both.stdout
    for name in ("corrected/fmnist", "sloppy/digits"):
        refused = run_script("table.py", "--results", str(tmp_path / "modes"), "--model_nums", "2", "--interim", name)
        assert refused.returncode == 2 and refused.stdout == "", name
        assert f"--interim names '{name}', which is no cell" in refused.stderr
        assert "corrected/digits, original/digits" in refused.stderr and "Traceback" not in refused.stderr


def test_one_seed_in_common_is_said_not_printed_as_nan(tmp_path):
    root = write_seed_tree(tmp_path / "runs", seeds=(0, 1), methods=("DIAM",))
    write_seed_tree(root, seeds=(0,), methods=("random",))
    plain = run_script("table.py", "--results", str(root), "--model_nums", "2")
    assert plain.returncode == 0, plain.stderr
    random_row = next(line for line in plain.stdout.splitlines() if line.startswith("Random"))
    assert ", no CI (1/2 seeds)" in random_row
    verdict_row = [line for line in plain.stdout.splitlines() if line.startswith("Random")][1]
    assert verdict_row.split() == ["Random", "+1.50", "-", "+2.00", "1", "-", "-", "not", "tested", "-"]
    assert "nan" not in plain.stdout.lower()


def test_single_seed_table_prints_what_it_printed_before_seeds(tmp_path):
    root = write_seed_tree(tmp_path / "runs", seeds=(0,), methods=("DIAM", "random"))
    plain = run_script("table.py", "--results", str(root), "--model_nums", "2")
    assert plain.returncode == 0, plain.stderr
    diam_mean = np.mean([model_mean("DIAM", 0, i) for i in ITERATIONS])
    assert plain.stdout.splitlines()[:2] == [
        "digits: mean top-1 accuracy (%) over al_iter 0-3 ± mean std across the T models; * = best of column",
        "method         T=2",
    ]
    assert f"DIAM           {diam_mean:.2f} ± 1.00*" in plain.stdout
    assert "(iteration 0)  50.00" in plain.stdout  # the regime, with no CI from one seed
    assert "seed" not in plain.stdout and "AULC" not in plain.stdout and "penalty" not in plain.stdout


# ------------------------------------------------------------------ the analysis plan's statistics
def test_holm_adjusts_a_family_step_down_and_leaves_untested_out():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06 (monotone)
    assert statistics.holm_adjusted([0.01, 0.04, None, 0.03, 0.005]) == \
        [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06), pytest.approx(0.02)]
    assert statistics.holm_adjusted([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]  # capped at 1
    assert statistics.holm_adjusted([]) == []


def test_verdict_words_follow_the_analysis_plan():
    word = statistics.verdict_word
    wide, narrow = statistics.Estimate(1.0, 5, 0.8), statistics.Estimate(0.1, 15, 0.3)
    assert word(wide, 0.01) == "leads" and word(statistics.Estimate(-1.0, 5, 0.8), 0.01) == "trails"
    assert word(statistics.Estimate(0.3, 15, 0.1), 0.001) == "leads by less than 0.5"
    assert word(narrow, 0.4) == "within 0.5"  # CI [-0.2, 0.4] inside the margin
    assert word(wide, 0.06) == "not resolved"
    assert word(statistics.Estimate(0.0, 4, 0.0), None) == "within 0.5"  # every difference 0
    assert word(statistics.Estimate(1.0, 2, 0.1), None) == "not tested"  # fewer than 3 seeds


def test_fewer_than_three_seeds_in_common_are_not_tested():
    two = statistics.paired_test([70.0, 72.0], [69.0, 70.5])
    assert (two.n, two.p_value, two.testable) == (2, None, False)
    scores = np.array([[[70.0, 71.0]], [[60.0, 62.0]]])  # 2 methods, 1 round, 2 seeds: far apart, untested
    wins, tested = statistics.penalty_matrix(scores)
    assert wins.sum() == 0 and tested.sum() == 0
    # A third seed in common (MIN_SEEDS_TO_TEST, as penalty_matrix's docstring says) makes the round tested.
    assert statistics.MIN_SEEDS_TO_TEST == 3
    wins, tested = statistics.penalty_matrix(np.array([[[70.0, 71.0, 72.0]], [[60.0, 62.0, 61.0]]]))
    np.testing.assert_array_equal(tested, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(wins, [[0, 1], [0, 0]])


def test_holm_runs_over_the_family_and_an_added_method_stays_outside_it(tmp_path):
    root = write_seed_tree(tmp_path / "runs")
    write_seed_tree(root, methods=("DIAM_qp",))  # not in the paper's family
    found = {v.method: v for v in analysis.verdicts(results.load_results(root), MODEL_NUM, DATASET)}
    family = ["CAL", "entropy", "margin", "random"]
    raw = {}
    for method in family + ["DIAM_qp"]:
        diam_aulcs = [np.mean([model_mean("DIAM", s, i) for i in ITERATIONS]) for s in SEEDS]
        other = [np.mean([model_mean(method, s, i) for i in ITERATIONS]) for s in SEEDS]
        differences = np.subtract(diam_aulcs, other)
        raw[method] = 0.0 if np.ptp(differences) < 1e-12 and differences[0] != 0 else stats.ttest_rel(diam_aulcs, other).pvalue
        assert found[method].p_value == pytest.approx(raw[method], rel=1e-9, abs=1e-15)
    order = sorted(family, key=raw.get)
    running = 0.0
    for rank, method in enumerate(order):  # Holm by hand over the four
        running = max(running, min(1.0, (4 - rank) * raw[method]))
        assert found[method].p_holm == pytest.approx(running, rel=1e-9, abs=1e-15)
    qp = found["DIAM_qp"]
    assert (qp.in_family, qp.p_holm) == (False, None)
    # DIAM_qp equals random here, so DIAM would lead it on the raw p; the table gives it no verdict word,
    # since the plan defines its words for the family's Holm-adjusted p only.
    assert qp.word == "leads" and found["random"].word == "leads"
    plain = run_script("table.py", "--results", str(root), "--model_nums", "2")
    row = next(line for line in plain.stdout.splitlines() if line.startswith("DIAM_qp") and "[" in line)
    assert "family of 4 comparisons" in plain.stdout and "- (exploratory)" in row and "leads" not in row
    assert "(exploratory): a method outside the family: its difference, CI and raw p, no verdict word" in plain.stdout


def test_the_later_rounds_difference_scales_the_aulc_difference_when_iteration_0_is_shared(seed_tree):
    found = analysis.verdicts(results.load_results(seed_tree), MODEL_NUM, DATASET)
    assert [v.method for v in found] == ["CAL", "entropy", "margin", "random"]
    for verdict in found:
        assert verdict.later_difference.mean == pytest.approx(verdict.aulc_difference.mean * 4 / 3)
        assert verdict.later_difference.half_width == pytest.approx(verdict.aulc_difference.half_width * 4 / 3)


def test_chance_count_of_a_penalty_matrix_and_the_regime(seed_tree, tmp_path):
    tree = results.load_results(seed_tree)
    matrix = analysis.penalty_matrix(tree, MODEL_NUM, DATASET)
    tests, expected, found = analysis.chance_significant(matrix)
    # 10 pairs x 3 rounds; 16 wins in the matrix test_penalty_matrix_on_a_constructed_case spells out.
    assert (tests, found) == (10 * 3, 16) and expected == pytest.approx(1.5)
    estimate, shared = analysis.iteration0_accuracy(tree, MODEL_NUM, DATASET)
    assert shared and estimate.mean == pytest.approx(np.mean([baseline(s, 0) for s in SEEDS]))
    # A tree whose methods do not share iteration 0 is said to be a mean of methods.
    other = write_tree(tmp_path / "other", {(MODEL_NUM, DATASET, "DIAM"): {0: [60, 62], 1: [70, 72]},
                                            (MODEL_NUM, DATASET, "random"): {0: [50, 52], 1: [60, 62]}})
    estimate, shared = analysis.iteration0_accuracy(results.load_results(other), MODEL_NUM, DATASET)
    assert not shared and estimate.mean == pytest.approx(56.0)
    # Shared, it is the seed's one value to the last bit, as reading.py prints it: six equal copies of
    # 78.1 average to 78.10000000000001, which turned a rounding tie the other way in the table.
    six = write_tree(tmp_path / "six", {(MODEL_NUM, DATASET, method): {0: [77.1, 79.1], 1: [80.0, 81.0]}
                                        for method in ("random", "least_conf", "margin", "entropy", "CAL", "DIAM")})
    estimate, shared = analysis.iteration0_accuracy(results.load_results(six), MODEL_NUM, DATASET)
    assert shared and estimate.mean == 78.1


def test_difference_curve_is_the_paired_difference_per_round(seed_tree):
    curve = analysis.difference_curve(results.load_results(seed_tree), MODEL_NUM, DATASET, "DIAM", "random")
    assert curve.rounds == (1, 2, 3)
    for round_, estimate in zip(curve.rounds, curve.estimates):
        differences = [diam_gain(s, round_) for s in SEEDS]
        assert estimate.mean == pytest.approx(np.mean(differences))
        assert estimate.half_width == pytest.approx(T_975_DOF3 * sample_sd(differences) / 2)


def test_plotted_curves_and_bands_are_the_seed_statistics(seed_tree):
    tree = results.load_results(seed_tree)
    figure = plot.draw_learning_curves([tree], MODEL_NUM, [DATASET], query_batch=50)
    ax = figure.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    bands = ax.collections
    assert len(bands) == len(METHODS)  # one CI band per method, no per-model error bars
    for method, band in zip(tree.methods(MODEL_NUM, DATASET), bands):
        curve = analysis.seed_curve(tree.runs[(MODEL_NUM, DATASET, method)])
        line = lines[results.method_display_name(method)]
        np.testing.assert_array_equal(line.get_xdata(), np.array(ITERATIONS) * 50)
        np.testing.assert_allclose(line.get_ydata(), curve.mean_top1)
        cell = analysis.dataset_table(tree, DATASET, [MODEL_NUM], [method]).cells[(method, MODEL_NUM)]
        assert np.mean(line.get_ydata()) == pytest.approx(cell.mean)
        vertices = band.get_paths()[0].vertices
        for x, mean, half_width in zip(line.get_xdata(), curve.mean_top1, curve.half_widths):
            at_x = vertices[np.isclose(vertices[:, 0], x), 1]
            assert (at_x.min(), at_x.max()) == (pytest.approx(mean - half_width), pytest.approx(mean + half_width))


def test_penalty_heatmap_shows_the_matrix_with_names_and_numbers(seed_tree):
    tree = results.load_results(seed_tree)
    matrix = analysis.penalty_matrix(tree, MODEL_NUM, DATASET)
    figure = plot.draw_penalty_matrices([tree], MODEL_NUM, [DATASET])
    ax = figure.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix.wins)
    names = [results.method_display_name(m) for m in METHODS]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    numbers = [t.get_text() for t in ax.texts]
    assert numbers == ["-" if i == j else str(matrix.wins[i, j]) for i in range(5) for j in range(5)]
    assert "significantly better" in figure._suptitle.get_text()


def test_plot_command_of_the_issue_writes_curves_and_penalty_matrix(seed_tree, tmp_path):
    # No --query_batch: the x axis comes from the labeled-set sizes the runs recorded.
    for iteration, n_labeled in ((0, 150), (1, 200)):
        models = [{"net_id": n, "n_labeled": n_labeled} for n in range(MODEL_NUM)]
        (seed_tree / "2" / DATASET / "DIAM" / str(iteration) / results.MODELS_FILE).write_text(json.dumps(models))
    tree = results.load_results(seed_tree)
    assert results.recorded_query_batch(tree, MODEL_NUM, DATASET) == 50
    drawn = plot.draw_learning_curves([tree], MODEL_NUM, [DATASET])
    np.testing.assert_array_equal(drawn.axes[0].lines[0].get_xdata(), np.array(ITERATIONS) * 50)

    out = tmp_path / "lc_seeds"
    done = run_script("plot.py", "--results", str(seed_tree), "--model_num", "2", "--datasets", DATASET,
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    for name in ("lc_seeds.png", "lc_seeds_penalty.png", "lc_seeds_differences.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG") and str(tmp_path / name) in done.stdout
    for name in ("lc_seeds.pdf", "lc_seeds_penalty.pdf", "lc_seeds_differences.pdf"):
        assert (tmp_path / name).read_bytes().startswith(b"%PDF")


def test_paired_difference_figure_draws_each_pair_with_its_paired_ci(seed_tree):
    tree = results.load_results(seed_tree)
    figure = plot.draw_paired_differences([tree], MODEL_NUM, [DATASET], query_batch=50)
    against_random, diam_against = figure.axes[:2]
    lines = {line.get_label(): line for line in diam_against.lines if not line.get_label().startswith("_")}
    assert set(lines) == {f"DIAM - {results.method_display_name(m)}" for m in METHODS if m != "DIAM"}
    expected = [np.mean([diam_gain(s, r) for s in SEEDS]) for r in (1, 2, 3)]
    np.testing.assert_allclose(lines["DIAM - Random"].get_ydata(), expected)
    # x: the rounds' queries, each pair set a little apart from the others
    np.testing.assert_allclose(np.round(lines["DIAM - Random"].get_xdata() / 50), [1, 2, 3])
    assert {line.get_label() for line in against_random.lines if not line.get_label().startswith("_")} == \
        {f"{results.method_display_name(m)} - Random" for m in METHODS if m != "random"}


def test_paired_aulc_differences_are_per_seed_over_the_iterations_both_reached(seed_tree):
    tree = results.load_results(seed_tree)
    diam, random = (tree.runs[(MODEL_NUM, DATASET, m)] for m in ("DIAM", "random"))
    differences = analysis.paired_aulc_differences(diam, random)
    assert differences == pytest.approx({s: np.mean([diam_gain(s, i) for i in ITERATIONS]) for s in SEEDS})
    assert analysis.paired_aulc_differences(diam, random, [2]) == pytest.approx({s: diam_gain(s, 2) for s in SEEDS})
    # A seed one of them lacks is left out, not counted as zero.
    assert set(analysis.paired_aulc_differences(diam, {s: random[s] for s in (1, 3)})) == {1, 3}


def test_what_a_spread_buys_matches_the_power_tables():
    # One-sample (paired) two-sided t-test at 0.05, Cohen's d = effect / sd: the textbook sample sizes
    # are 10 (d = 1, 80% power), 34 (d = 0.5, 80%) and 13 (d = 1, 90%).
    assert statistics.seeds_for_power(sd=2.0, effect=2.0) == 10
    assert statistics.seeds_for_power(sd=1.0, effect=0.5) == 34
    assert statistics.seeds_for_power(sd=0.8, effect=0.8, power=0.9) == 13
    assert statistics.seeds_for_power(sd=100.0, effect=0.01, most=50) is None
    # The CI half-width a planned count gives is the one mean_with_ci measures at that spread.
    values = np.array([1.0, -1.0] * 5)  # sd = sqrt(10/9)
    assert statistics.expected_half_width(float(np.std(values, ddof=1)), 10) == pytest.approx(
        statistics.mean_with_ci(values).half_width)
