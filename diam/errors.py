"""User-facing errors: one clear paragraph and a non-zero exit, never a bare traceback."""
import sys


class UserError(Exception):
    """A problem with the user's input or environment, explained in one paragraph."""


def run_cli(main) -> None:
    """Run a script's main(); print a UserError as a paragraph and exit 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
