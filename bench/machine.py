"""What every benchmark prints about the machine it ran on."""
import os
import platform


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
