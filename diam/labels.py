"""path,label CSV files: the manifests of a dataset made from files, and the label sheets a person fills in.

A label sheet lists the images al_select.py picked for an iteration (`path,label`, the
label empty where nobody knows it yet); the next training step reads the labels back
and refuses, naming the file and its rows, while any is missing or not a class.
Rows are matched by path, so a person may sort or reorder them freely.
"""
import csv
import io
from pathlib import Path
from typing import Optional, Sequence

from .errors import UserError
from .paths import write_text

HEADER = ("path", "label")
SHOWN = 5  # rows or images named in an error message before "and N more"


def some_of(items) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def read_rows(path: Path, what: str) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every row of a path,label file; `what` names the file in errors.

    A missing file, other columns, a row with another number of fields or broken quoting (a
    file cut short, say) is a UserError naming the file and its rows. Labels are stripped of
    surrounding spaces; an empty label is returned as "".
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not part of the header
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path} could not be read ({err}). Save it as a UTF-8 CSV file with the "
                        "columns path,label.") from None
    reader = csv.reader(io.StringIO(text), strict=True)
    rows, bad = [], []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):  # a blank line, or a spreadsheet's row of empty cells
                continue
            while len(fields) > len(HEADER) and not fields[-1].strip():  # empty columns a spreadsheet added
                fields.pop()
            rows.append((reader.line_num, fields))
    except csv.Error as err:
        raise UserError(f"{what} {path} is not a valid CSV file at line {reader.line_num} ({err}); it may have "
                        "been cut short. Fix or restore it (columns path,label), then run the same command "
                        "again.") from None
    if not rows or tuple(f.strip().lower() for f in rows[0][1]) != HEADER:
        first = ",".join(rows[0][1]) if rows else "nothing"
        raise UserError(f"{what} {path} must start with the header line 'path,label'; its first line is "
                        f"'{first}'. Fix the file, then run the same command again.")
    for line, fields in rows[1:]:
        if len(fields) != 2:
            bad.append(line)
    if bad:
        raise UserError(f"{what} {path} has rows without exactly two fields (path,label) at line(s) "
                        f"{some_of(bad)}; the file may have been cut short, or a path holds a comma without "
                        "quotes. Fix or restore it, then run the same command again.")
    return [(line, fields[0], fields[1].strip()) for line, fields in rows[1:]]


def write_sheet(path: Path, image_paths: Sequence[str], labels: Sequence[Optional[str]]) -> None:
    """The label sheet: one row per image, its label where known, else empty (written atomically)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((p, label or "") for p, label in zip(image_paths, labels))
    write_text(path, out.getvalue())


def read_sheet(path: Path, image_paths: Sequence[str], classes: Sequence[str], how_to_rewrite: str) -> list[int]:
    """The class index of each image in `image_paths`, from the label sheet at `path`.

    Every image must have exactly one row, and every row a label among `classes`; otherwise a
    UserError names the file, the rows and what to do (`how_to_rewrite`: the command that writes
    the sheet again, for a sheet that was lost).
    """
    if not path.exists():
        raise UserError(f"the label sheet {path} does not exist: al_select.py writes it with the images it "
                        f"selected, for you to label. Write it again with {how_to_rewrite} (the same images), "
                        "fill in the label column, then run this command again.")
    rows = read_rows(path, "the label sheet")
    wanted = {p: i for i, p in enumerate(image_paths)}
    index = {c: i for i, c in enumerate(classes)}
    found: dict[str, int] = {}
    foreign, repeated, empty, unknown = [], [], [], []
    for line, image, label in rows:
        if image not in wanted:
            foreign.append(line)
        elif image in found:
            repeated.append(line)
        elif label == "":
            empty.append(line)
            found[image] = -1
        elif label not in index:
            unknown.append(f"line {line} '{label}'")
            found[image] = -1
        else:
            found[image] = index[label]
    missing = [p for p in image_paths if p not in found]
    problems = []
    if empty:
        problems.append(f"no label at line(s) {some_of(empty)}")
    if unknown:
        problems.append(f"labels that are not classes at {some_of(unknown)} (the classes: {', '.join(classes)})")
    if missing:
        problems.append(f"no row for {len(missing)} selected image(s): {some_of(missing)} (the file may have been "
                        "cut short)")
    if foreign:
        problems.append(f"rows for images that were not selected at line(s) {some_of(foreign)}")
    if repeated:
        problems.append(f"a second row for the same image at line(s) {some_of(repeated)}")
    if problems:
        raise UserError(f"the label sheet {path} is not complete: {'; '.join(problems)}. Each of the "
                        f"{len(image_paths)} selected images needs one row with its class in the label column. "
                        "Fix the file (nothing was trained or written), then run this command again.")
    return [found[p] for p in image_paths]
