"""`visiontool data check`: read every split without stopping at the first problem.

Readers already record problems as `Issue`s (file and line where the format has lines); this
module runs them over all splits and gathers one report, so a user fixes everything in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontool.data.records import ERROR, WARNING, Issue


@dataclass
class SplitReport:
    name: str
    images: int
    objects: int | None  # None for classification
    errors: int
    warnings: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CheckReport:
    path: str
    format: str
    task: str
    classes: list[str]
    splits: list[SplitReport] = field(default_factory=list)
    issues: list[tuple[str, Issue]] = field(default_factory=list)  # (split, issue)

    @property
    def errors(self) -> int:
        return sum(1 for _, issue in self.issues if issue.level == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for _, issue in self.issues if issue.level == WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "task": self.task,
            "classes": self.classes,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": [s.to_dict() for s in self.splits],
            "issues": [{"split": split, **issue.to_dict()} for split, issue in self.issues],
        }


def check_dataset(path: str | Path, *, format: str | None = None) -> CheckReport:
    """Every split of `path`, with its counts and problems. Raises DataError only when the
    path cannot be read as a data set at all (missing, unknown format)."""
    from visiontool.data.datasets import open_splits

    splits = open_splits(path, format=format, strict=False)
    first = next(iter(splits.values()))
    report = CheckReport(
        path=str(path), format=first.format, task=first.task, classes=list(first.classes)
    )
    seen: set[tuple[str, Issue]] = set()
    for name, dataset in splits.items():
        issues = [i for i in dataset.issues if (name, i) not in seen]
        objects = None
        if dataset.task == "detect":
            objects = sum(len(r.labels) for r in dataset.records())
        report.splits.append(
            SplitReport(
                name=name,
                images=len(dataset),
                objects=objects,
                errors=sum(1 for i in issues if i.level == ERROR),
                warnings=sum(1 for i in issues if i.level == WARNING),
            )
        )
        report.issues += [(name, issue) for issue in issues]
        seen.update((name, issue) for issue in issues)
        if dataset.classes != first.classes:
            report.issues.append(
                (name, Issue(ERROR, str(path), f"split {name!r} has different class names"))
            )
    return report
