"""Flags shared by the scripts, parsed in one place so they cannot drift apart."""
import argparse
import math
from pathlib import Path

from .errors import UserError
from .paths import RunPaths, check_run_config, default_work_dir, refuse_paper_results
from .presets import DATASETS, DIAM_QP_Q, METHODS, Preset, add_preset_arguments, preset_from_args


def parser(description: str, method_required: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--method", required=method_required, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--al_iter", type=int, required=True, help="active-learning iteration, 0 = initial set")
    p.add_argument("--model_num", type=int, required=True, help="T, the number of target models (nets 0..T-1)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--work_dir", default=None, help="where runs live (default: $DIAM_WORK_DIR or ./runs)")
    p.add_argument("--data_root", default=None, help="where dataset files live (default: $DIAM_DATA_ROOT or ./data)")
    p.add_argument("--redo", action="store_true", help="redo this step even if its outputs exist")
    add_preset_arguments(p)
    return p


def run_paths(args, results_dir=None) -> RunPaths:
    """The run folder of these flags, checked against the settings it was made with."""
    preset = preset_from_args(args)
    paths = RunPaths(args.work_dir or default_work_dir(), preset.name, args.dataset, results_dir, preset.seed)
    if args.dataset in DATASETS:
        check_run_config(paths, run_settings(args.dataset, preset), claim=False)
    return paths


def finished(*outputs) -> bool:
    """A step whose last outputs exist is complete: report it and skip the work.

    Checked before torch is imported, so resuming a long loop skips finished steps in
    a fraction of a second each.
    """
    if all(o.exists() for o in outputs):
        for o in outputs:
            print(f"already done: {o}")
        return True
    return False


def run_settings(dataset: str, preset: Preset) -> dict:
    """What config.json of a run folder records: every setting, and the mode they add up to."""
    return {"dataset": dataset, "mode": preset.mode, **preset.as_dict()}


def device_from_arg(name):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device '{name}'. Use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for a GPU, but PyTorch sees none here. Use --device cpu.")
    return device


# ---------------------------------------------------------------- the three steps
# Each script's flags and work, here so that the scripts and run_grid.py's workers
# parse the same command lines and run the same code. `*_outputs` are the files that
# mark a step done; `run_*` skips a finished step (True when it did work).
def train_args(argv=None, description="Train target nets for one active-learning iteration.") -> argparse.Namespace:
    p = parser(description, method_required=False)
    p.add_argument("--net_id", type=int, nargs="+", required=True, help="target net(s), 0..11 (SPEC section 2)")
    p.add_argument("--mDIS", action="store_true", help="record late-epoch snapshots whatever the method")
    p.add_argument("--DIS_frac", dest="dis_frac", type=float, default=None,
                   help="share of the last epochs that leave snapshots (default: the preset's, 0.5)")
    args = p.parse_args(argv)
    if args.method is None:
        if args.al_iter != 0:
            p.error("--method is required after iteration 0 (iteration 0 is shared by all methods)")
        args.method = "random"
    return args


def train_outputs(args) -> list[Path]:
    paths = run_paths(args)
    return [paths.checkpoint(args.model_num, args.method, args.al_iter, n) for n in args.net_id]


def run_train(args) -> bool:
    if not args.redo and finished(*train_outputs(args)):
        return False
    from .experiment import Run, train_step  # loads torch: only when there is work to do

    run = Run(args)
    for net_id in args.net_id:
        print(train_step(run, net_id, args.mDIS), flush=True)
    return True


def test_args(argv=None, description="Test the T target nets of one iteration.") -> argparse.Namespace:
    p = parser(description)
    p.add_argument("--results_dir", default=None,
                   help="root of the results tree (default: <work_dir>/<preset>/extracted_results)")
    return p.parse_args(argv)


def test_outputs(args) -> list[Path]:
    paths = run_paths(args, args.results_dir)
    refuse_paper_results(paths.results_root)
    return [paths.performances(args.model_num, args.method, args.al_iter)]


def run_test(args) -> bool:
    if not args.redo and finished(*test_outputs(args)):
        return False
    from .experiment import Run, test_step  # loads torch: only when there is work to do

    print(test_step(Run(args, results_dir=args.results_dir)))
    return True


def select_args(argv=None, description="Select the next batch of examples to label.") -> argparse.Namespace:
    p = parser(description)
    p.add_argument("--batch_size", type=int, default=None,
                   help="examples to select (default: the preset's query batch, 1500 in the paper)")
    p.add_argument("--DIAMq", type=float, default=DIAM_QP_Q,
                   help=f"DIAM_qp only: weight q of the disagreement score against batch diversity "
                        f"(default {DIAM_QP_Q})")
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        p.error("--batch_size must be positive")
    if not (math.isfinite(args.DIAMq) and args.DIAMq >= 0):
        p.error("--DIAMq must be a finite number >= 0")
    return args


def select_outputs(args) -> list[Path]:
    return [run_paths(args).indices(args.model_num, args.method, args.al_iter + 1)]


def run_select(args) -> bool:
    if not args.redo and finished(*select_outputs(args)):
        return False
    from .experiment import Run, select_step  # loads torch: only when there is work to do

    print(select_step(Run(args), args.batch_size))
    return True
