"""CSV classification: rows `filename,label`; several labels separated by spaces make a
multi-label set. A header row (`filename,label`, `image,labels`...) is optional. Paths are
relative to the CSV's folder (or its `images/` subfolder).
"""

from __future__ import annotations

import csv
from pathlib import Path

from visiontool.data.classification import ClassificationDataset
from visiontool.data.formats.common import match_split, place_file, visible_stems
from visiontool.data.records import Issues, name_problem, outside_reason, read_text_capped
from visiontool.errors import DataError

HEADER_WORDS = {"filename", "file", "file_name", "path", "image", "image_path", "img", "name"}


def probe(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".csv"
    return path.is_dir() and any(path.glob("*.csv"))


def splits(path: Path) -> list[str]:
    return [] if path.is_file() else sorted(visible_stems(list(path.glob("*.csv"))))


def read(
    path: Path, split: str | None, *, classes: list[str] | None = None
) -> ClassificationDataset:
    split_name = None
    if path.is_dir():
        split_name = match_split(split, splits(path), path)
        if split_name is None:
            raise DataError(f"{path}: no .csv file in this folder")
        csv_path = path / f"{split_name}.csv"
        all_csv = [path / f"{name}.csv" for name in splits(path)]
    else:
        csv_path, all_csv = path, [path]
    issues = Issues()
    rows = _rows(csv_path, issues)
    if classes is None:
        names = {label for f in all_csv for _, labels, _ in _rows(f, Issues()) for label in labels}
        classes = _natural_sort(names)
    return _dataset(csv_path, rows, classes, split_name, issues)


def _rows(csv_path: Path, issues: Issues) -> list[tuple[str, list[str], int]]:
    """(filename, labels, line number) per data row."""
    try:
        text = read_text_capped(csv_path, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read CSV ({exc})") from exc
    rows = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and row[0].strip().lower() in HEADER_WORDS:
            continue
        if len(row) < 2 or not row[1].strip():
            issues.error(
                f"{csv_path}:{number}", f"expected 'filename,label', got {','.join(row)!r}"
            )
            continue
        rows.append((row[0].strip(), row[1].split(), number))
    return rows


def _natural_sort(names: set[str]) -> list[str]:
    """Numeric labels in numeric order ('2' before '10'), others alphabetically."""
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def _dataset(
    csv_path: Path,
    rows: list[tuple[str, list[str], int]],
    classes: list[str],
    split: str | None,
    issues: Issues,
) -> ClassificationDataset:
    root = csv_path.parent
    index_of = {name: k for k, name in enumerate(classes)}
    samples, label_sets = [], []
    multi = any(len(labels) > 1 for _, labels, _ in rows)
    for file_name, labels, number in rows:
        where = f"{csv_path}:{number}"
        path = _resolve(root, file_name)
        unknown = [label for label in labels if label not in index_of]
        bad = [(label, name_problem(label, folder=True)) for label in labels]
        bad = [(label, problem) for label, problem in bad if problem]
        outside = outside_reason(path, root)
        if unknown:
            issues.error(where, f"unknown class {unknown[0]!r}")
        elif bad:
            issues.error(
                where,
                f"class name {bad[0][0]!r} {bad[0][1]}: class names become folder names; rename it",
            )
        elif outside:
            issues.error(where, f"path {file_name!r} {outside}")
        elif not path.is_file():
            issues.error(where, f"missing image file {path}")
        else:
            ids = [index_of[label] for label in labels]
            samples.append((path, ids[0]))
            label_sets.append(ids)
    return ClassificationDataset(
        samples,
        classes,
        root=root,
        label_sets=label_sets if multi else None,
        format="csv",
        split=split,
        issues=issues.items,
    )


def _resolve(root: Path, file_name: str) -> Path:
    direct = root / file_name
    if "\x00" in file_name or direct.is_file():
        return direct
    nested = root / "images" / file_name
    return nested if nested.is_file() and outside_reason(nested, root) is None else direct


def write(splits: dict[str, ClassificationDataset], out: Path, *, transfer: str = "copy") -> None:
    """`out/<split>.csv` with `filename,label` rows and images under `out/images/<split>/`."""
    import io

    from visiontool.io.atomic import write_bytes

    for split, dataset in splits.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["filename", "label"])
        for index, (path, label) in enumerate(dataset.samples):
            name = f"images/{split}/{index:06d}_{path.name}"
            place_file(path, out / name, transfer=transfer)
            ids = dataset.label_sets[index] if dataset.label_sets else [label]
            writer.writerow([name, " ".join(dataset.classes[i] for i in ids)])
        write_bytes(out / f"{split}.csv", buffer.getvalue().encode("utf-8"))
