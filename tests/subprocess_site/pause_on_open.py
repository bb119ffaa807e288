"""Stop a step at an exact point, for tests that interrupt it there.

With PAUSE_SCRIPT, PAUSE_ON_OPEN and PAUSE_MARKER in the environment, a Python process
running the script PAUSE_SCRIPT that opens a file whose path ends with PAUSE_ON_OPEN
first creates the file PAUSE_MARKER, then sleeps: the test waits for the marker and
kills the step while it is paused inside its work.
"""
import os
import sys
import time

PAUSE_SECONDS = 600


def install() -> None:
    script, suffix, marker = (os.environ.get(k) for k in ("PAUSE_SCRIPT", "PAUSE_ON_OPEN", "PAUSE_MARKER"))
    if not (script and suffix and marker) or os.path.basename(sys.argv[0]) != script:
        return

    def pause_at_open(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]).endswith(suffix):
            with open(marker, "w"):
                pass
            time.sleep(PAUSE_SECONDS)

    sys.addaudithook(pause_at_open)
