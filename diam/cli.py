"""Flags shared by the scripts, parsed in one place so they cannot drift apart."""
import argparse

from .errors import UserError
from .paths import RunPaths, check_run_config, default_work_dir
from .presets import DATASETS, METHODS, Preset, add_preset_arguments, preset_from_args


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
