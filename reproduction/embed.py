"""Put the files report.sh wrote into the report that shows them, between their markers:

    python reproduction/embed.py REPRODUCTION.md

A block opens with `<!-- reproduction/NAME, as report.sh wrote it -->` and closes with
`<!-- end of reproduction/NAME -->`; everything between is replaced by the file NAME
(beside this script; NAME may name a subfolder's file, fourth_edition/budget/what_ran.md): a
Markdown file as it is, then a blank line; any other inside a ```text fence. So the report
shows the tables the committed results give, never a stale copy. The report is rewritten
whole or not at all (temporary file, then rename).
"""
import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPENING = r"<!-- reproduction/(?P<name>[\w./]+), as report\.sh wrote it -->"
BLOCK = re.compile(rf"({OPENING}\n)(?P<body>.*?)(<!-- end of reproduction/(?P=name) -->)", re.S)


def fail(message: str) -> None:
    sys.exit(f"embed.py: {message}")


def embedded(report: str, folder: Path) -> tuple[str, list[str]]:
    """The report with each block's body replaced by its file, and the names of the files."""
    names = []

    def body(match: re.Match) -> str:
        name = match["name"]
        if ".." in name.split("/"):
            fail(f"the report shows reproduction/{name}, a path out of the folder: name a file inside it.")
        path = folder / name
        if not path.is_file():
            fail(f"the report shows reproduction/{name}, which does not exist: run `bash reproduction/report.sh` "
                 "first, or remove the block from the report.")
        text = path.read_text().rstrip("\n") + "\n"
        names.append(name)
        # A blank line ends a Markdown table before the closing marker; other files are fenced.
        shown = text + "\n" if name.endswith(".md") else f"```text\n{text}```\n"
        return match.group(1) + shown + match.group(4)

    rewritten = BLOCK.sub(body, report)
    opened = len(re.findall(OPENING, report))
    if opened != len(names):
        fail(f"{opened} block(s) open with `<!-- reproduction/NAME, as report.sh wrote it -->` but only "
             f"{len(names)} close with `<!-- end of reproduction/NAME -->` under the same name: close each block "
             "on a line of its own after its content.")
    return rewritten, names


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the Markdown report to update (REPRODUCTION.md)")
    parser.add_argument("--folder", type=Path, default=HERE,
                        help="where the shown files are (default: reproduction/, beside this script)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        fail(f"no report at {args.report}: give the Markdown file that shows report.sh's files.")
    rewritten, names = embedded(args.report.read_text(), args.folder)
    handle, temporary = tempfile.mkstemp(dir=args.report.parent, prefix=f".{args.report.name}.")
    with os.fdopen(handle, "w") as f:
        f.write(rewritten)
    os.chmod(temporary, args.report.stat().st_mode & 0o777)
    os.replace(temporary, args.report)
    print(f"embed.py: {args.report} shows {', '.join(names) or 'no file'} as report.sh wrote them")


if __name__ == "__main__":
    main()
