"""The documentation holds together: the README stays short, every page opens with its command,
links between pages work, and every command they show names a script that exists with flags it
takes (checked against the script's own --help, without running the work)."""
import re
import shlex
import subprocess
import sys
from functools import lru_cache

import pytest

from conftest import PROJECT

PAGES = [PROJECT / "README.md", PROJECT / "REPRODUCTION.md", *sorted((PROJECT / "docs").glob("*.md"))]
README_MOST_LINES = 250
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)


def commands(text: str) -> list[list[str]]:
    """The commands of a page's bash blocks, continuation lines joined, comments and
    environment assignments dropped; each as its words."""
    found = []
    for block in bash_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"&&|\|\|?|;", line):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                    words.pop(0)  # PRESET=quick bash iter_all.sh ...
                if words:
                    found.append(words)
    return found


@lru_cache(maxsize=None)
def script_help(script: str) -> str:
    done = subprocess.run([sys.executable, str(PROJECT / script), "--help"], capture_output=True, text=True,
                          cwd=PROJECT, timeout=300)
    assert done.returncode == 0, f"{script} --help failed: {done.stderr[-2000:]}"
    return done.stdout


def test_the_readme_is_read_in_five_minutes():
    assert len((PROJECT / "README.md").read_text().splitlines()) <= README_MOST_LINES


def test_every_docs_page_opens_with_the_command_a_reader_came_for():
    for page in sorted((PROJECT / "docs").glob("*.md")):
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# "), page.name
        opening = "\n".join(lines[:8])
        assert "```bash" in opening, f"{page.name} does not open with its command"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_between_pages_work(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"
        assert PROJECT in path.parents, f"{page.name} links outside the repository: {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_shown_command_names_a_script_that_exists_with_flags_it_takes(page):
    checked = 0
    for words in commands(page.read_text()):
        program, *args = words
        if program in ("python", "python3", ".venv/bin/python") and args and args[0].endswith(".py"):
            script, flags = args[0], [a.split("=")[0] for a in args[1:] if a.startswith("--")]
            assert (PROJECT / script).is_file(), f"{page.name}: {script} does not exist"
            usage = script_help(script)
            unknown = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", usage)]
            assert not unknown, f"{page.name}: {' '.join(words)} uses flags {script} does not take: {unknown}"
            checked += 1
        elif program == "bash" and args and args[0].endswith(".sh"):
            assert (PROJECT / args[0]).is_file(), f"{page.name}: {args[0]} does not exist"
            syntax = subprocess.run(["bash", "-n", str(PROJECT / args[0])], capture_output=True, text=True)
            assert syntax.returncode == 0, syntax.stderr
            checked += 1
    if page.name in ("README.md", "cluster.md", "repeats.md", "scripts.md"):
        assert checked, f"no command of {page.name} was checked: the extraction is broken"


def test_the_reproduction_report_shows_the_files_report_sh_wrote_and_quotes_only_their_numbers():
    """REPRODUCTION.md's tables are report.sh's files as committed (embed.py puts them in), and each
    decimal number of its reading is one that reading.txt, table.txt or what_ran.md prints, so a
    number copied by hand or left from an earlier set of seeds fails here."""
    sys.path.insert(0, str(PROJECT / "reproduction"))
    from embed import embedded
    report = (PROJECT / "REPRODUCTION.md").read_text()
    rewritten, names = embedded(report, PROJECT / "reproduction")
    assert names == ["fourth_edition/budget/what_ran.md", "fourth_edition/repro/what_ran.md", "what_ran.md",
                     "table.txt"] and rewritten == report, \
        "run `bash reproduction/report.sh` (the third edition) or `PROGRESS=1 bash reproduction/fourth_edition.sh`"
    printed = "".join((PROJECT / "reproduction" / name).read_text() for name in ("reading.txt", *names[2:]))
    number = re.compile(r"(?<![\w.])[+-]?\d+\.\d+")
    known = set(number.findall(printed))
    known |= {n.lstrip("+-") for n in known}
    start = report.index("<!-- numbers from reproduction/reading.txt and table.txt")
    reading = report[start:report.index("<!-- end of the numbers from reading.txt and table.txt -->")]
    quoted = number.findall(reading)
    assert len(quoted) > 50, "the markers around the reading moved"
    assert [n for n in quoted if n not in known] == []
