"""What the benchmarks share: the machine they ran on, the device, the nets they time."""
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def shown(word) -> str:
    """A path (or any word of a command) as the results show it: an absolute path relative to the
    project, so that a results file reads the same on any machine; a temporary folder (gone after
    the benchmark) as it is."""
    word = str(word)
    if not os.path.isabs(word) or word.startswith(os.path.join(tempfile.gettempdir(), "")):
        return word
    return os.path.relpath(word, PROJECT)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def load_average_lines() -> list[str]:
    """The load average at start: timings on a shared machine need it beside them."""
    try:
        return [f"load average at start (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    except OSError:
        return []


def torch_device(name: str, threads: int = 0):
    """The torch device to time on (exits when a GPU is asked for and absent); threads > 0 sets torch's."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {name}: PyTorch sees no GPU here")
    if device.type == "cuda":
        from diam.training import allow_tf32

        allow_tf32()  # as the scripts run: fp32 with TF32 matmuls and convolutions
    if threads:
        torch.set_num_threads(threads)
    return device


def device_line(device) -> str:
    import torch

    device = torch.device(device)
    return f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def net_ids(values: list[str]) -> list[int]:
    """A --nets list: 'all', or target net ids; ValueError names a bad one."""
    from diam.models import OFA_IDS

    if values == ["all"]:
        return list(range(len(OFA_IDS)))
    ids = [int(v) for v in values]
    for net_id in ids:
        if not 0 <= net_id < len(OFA_IDS):
            raise ValueError(f"there is no net {net_id}: the target nets are 0..{len(OFA_IDS) - 1}")
    return ids


def git(*argv) -> str:
    """A git command's output in this project's repository."""
    return subprocess.run(["git", "-C", str(PROJECT), *argv], check=True, capture_output=True,
                          text=True).stdout.strip()


def export(commit: str, destination: Path) -> str:
    """The tree of `commit` written into `destination` (the repository is not touched); returns the
    commit's full hash."""
    full = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT), "archive", full], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    return full
