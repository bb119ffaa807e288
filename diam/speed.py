"""How fast the passes and steps run, never what they compute: the speed switches.

Read once from the environment at the command-line edge (so `iter_all.sh`, `PARALLEL=k`
and `run_grid.py`'s workers, which all pass `DIAM_*` variables on, see the same), and
handed down. None of them is part of a run folder's settings: they change float
rounding at most, not the experiment.

    DIAM_SCORING=fused|plain     the forward of passes over the pool and the test set:
                                 fused (default) is an inference copy of the net with
                                 BatchNorm folded, torch's hardswish and kernels cropped to
                                 their inputs (diam/inference.py); plain is the net as trained
    DIAM_SCORING_BATCH=N         forward batch of the passes through the evaluation transform
                                 (default: the preset's eval_batch). Passes through the training
                                 augmentation (--score_with_train_aug) keep the preset's batch,
                                 so that their random draws stay those of the eval_batch chunks
    DIAM_CUDA_FAST=PIECE[,PIECE] CUDA-only pieces, all off by default (unmeasured until the GPU
                                 check has run them; ignored on the CPU):
                                   benchmark        torch.backends.cudnn.benchmark
                                   scoring_graphs   the scoring forward replayed from a CUDA graph
                                   training_graphs  each full training step replayed from a CUDA graph
                                   streams[=K]      train_net.py with several --net_id trains K of them
                                                    at once (default 4), each on its own CUDA stream
                                   all              every piece above
    DIAM_CPU_FAST=PIECE[,PIECE]  CPU-only pieces of the training step, off by default (each
                                 changes float rounding: docs/benchmarks.md says what they gain
                                 and what the iteration-0 check found; ignored on CUDA):
                                   crop_taps  depthwise kernels cropped to the taps that can meet
                                              their input (diam/cpu_fast.py)
                                   compile    the forward and loss through torch.compile
                                   small_convs  convs on tiny inputs as matrix products and
                                              shifted sums, in training (diam/cpu_fast.py)
                                   all        all three
"""
import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from .errors import UserError

SCORING_MODES = ("fused", "plain")
CUDA_PIECES = ("benchmark", "scoring_graphs", "training_graphs", "streams")
CPU_PIECES = ("crop_taps", "compile", "small_convs")
DEFAULT_CONCURRENT_NETS = 4


@dataclass(frozen=True)
class Speed:
    scoring: str = "fused"  # one of SCORING_MODES
    scoring_batch: Optional[int] = None  # None: the preset's eval_batch
    cudnn_benchmark: bool = False
    scoring_graphs: bool = False
    training_graphs: bool = False
    concurrent_nets: int = 1  # nets of one train_net.py call trained at once (CUDA streams)
    crop_taps: bool = False  # CPU: depthwise taps that meet only padding are not computed
    compile: bool = False  # CPU: the training forward and loss through torch.compile
    small_convs: bool = False  # CPU: training convs on tiny inputs as the products they are

    @property
    def fused(self) -> bool:
        return self.scoring == "fused"

    def cuda_pieces(self) -> list[str]:
        """The CUDA-only pieces switched on, by name."""
        pieces = [name for name, on in (("benchmark", self.cudnn_benchmark), ("scoring_graphs", self.scoring_graphs),
                                        ("training_graphs", self.training_graphs)) if on]
        return pieces + ([f"streams={self.concurrent_nets}"] if self.concurrent_nets > 1 else [])

    def cpu_pieces(self) -> list[str]:
        """The CPU-only pieces switched on, by name."""
        return [name for name in CPU_PIECES if getattr(self, name)]

    def on_device(self, device_type: str) -> "Speed":
        """These settings as they act on a device: the CUDA-only pieces off anywhere but CUDA, the
        CPU-only pieces off anywhere but the CPU."""
        if device_type == "cuda":
            return replace(self, **{name: False for name in CPU_PIECES})
        return Speed(scoring=self.scoring, scoring_batch=self.scoring_batch,
                     **({name: getattr(self, name) for name in CPU_PIECES} if device_type == "cpu" else {}))


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{name} must be a positive whole number, got '{text}'.")
    return value


def speed_from_environment(environ: Mapping[str, str] = os.environ) -> Speed:
    """The switches of the DIAM_SCORING, DIAM_SCORING_BATCH and DIAM_CUDA_FAST variables."""
    scoring = environ.get("DIAM_SCORING", "").strip() or "fused"
    if scoring not in SCORING_MODES:
        raise UserError(f"DIAM_SCORING='{scoring}' is not a scoring forward: use one of {', '.join(SCORING_MODES)} "
                        "(or leave it unset for fused).")
    batch_text = environ.get("DIAM_SCORING_BATCH", "").strip()
    scoring_batch = _positive_int("DIAM_SCORING_BATCH", batch_text) if batch_text else None
    pieces, concurrent = set(), None
    for item in filter(None, (p.strip() for p in environ.get("DIAM_CUDA_FAST", "").split(","))):
        name, _, value = item.partition("=")
        if name == "all" and not value:
            pieces.update(CUDA_PIECES)
        elif name in CUDA_PIECES and (not value or name == "streams"):
            pieces.add(name)
            if value:
                concurrent = _positive_int("DIAM_CUDA_FAST's streams=K", value)
        else:
            raise UserError(f"DIAM_CUDA_FAST has an unknown piece '{item}': give a comma-separated list of "
                            f"{', '.join(CUDA_PIECES)} (streams=K for K nets at once) or 'all'.")
    if concurrent is None:
        concurrent = DEFAULT_CONCURRENT_NETS
    cpu = set()
    for item in filter(None, (p.strip() for p in environ.get("DIAM_CPU_FAST", "").split(","))):
        if item not in (*CPU_PIECES, "all"):
            raise UserError(f"DIAM_CPU_FAST has an unknown piece '{item}': give a comma-separated list of "
                            f"{', '.join(CPU_PIECES)}, or 'all'.")
        cpu.update(CPU_PIECES if item == "all" else [item])
    return Speed(scoring=scoring, scoring_batch=scoring_batch, cudnn_benchmark="benchmark" in pieces,
                 scoring_graphs="scoring_graphs" in pieces, training_graphs="training_graphs" in pieces,
                 concurrent_nets=concurrent if "streams" in pieces else 1,
                 **{name: name in cpu for name in CPU_PIECES})
