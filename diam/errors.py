"""User-facing errors: one clear paragraph and a non-zero exit, never a bare traceback."""
import os
import sys


class UserError(Exception):
    """A problem with the user's input or environment, explained in one paragraph."""


def run_cli(main) -> None:
    """Run a script's main(); print a UserError as a paragraph and exit 2. A reader that went away
    (`table.py | head`) ends the script quietly."""
    try:
        main()
        sys.stdout.flush()  # here, not at the interpreter's exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # Nothing more can be said to a reader who left; stdout goes to devnull so that the final
        # flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
