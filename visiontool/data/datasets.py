"""`open_dataset`: one call that turns `--data PATH` into a Dataset, whatever the format.

PATH may be a data set folder (COCO, VOC, YOLO or ImageFolder layout, auto-detected), a COCO
json, a CSV, a YOLO image list, or a small YAML/JSON data spec:

    path: .                 # optional root, relative to the spec file
    train: images/train     # a folder, json, csv or txt list per split
    val: images/val
    names: [circle, square] # or {0: circle, 1: square}
    format: yolo            # optional; auto-detected per split otherwise
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError, DataError

SPEC_SUFFIXES = (".yaml", ".yml")
TASKS = {"detect": "detection", "classify": "classification"}


def open_dataset(
    path: str | Path,
    *,
    split: str | None = None,
    format: str | None = None,
    task: str | tuple[str, ...] | None = None,
    strict: bool = True,
) -> Any:
    """A `DetectionDataset` or `ClassificationDataset` for one split of `path`; `task` names
    the kind wanted ("detect", "classify", or a tuple of kinds that will do).

    Raises `DataError` when the path is missing, unreadable, empty, or (with `strict`) has any
    error-level problem; warnings (clipped or dropped boxes) stay in `dataset.issues`.
    """
    dataset = _open(Path(path), split=split, format=format)
    _check_task(dataset, path, task)
    if strict:
        raise_on_errors(dataset, path)
    if len(dataset) == 0 and not any(i.level == "error" for i in dataset.issues):
        where = f" (split {dataset.split!r})" if dataset.split else ""
        raise DataError(f"{path}{where}: no images found")
    return dataset


def open_splits(
    path: str | Path, *, format: str | None = None, strict: bool = True
) -> dict[str, Any]:
    """Every split of `path` ({'all': dataset} for formats without splits), for conversion."""
    names = list_splits(path, format=format)
    if not names:
        return {"all": open_dataset(path, format=format, strict=strict)}
    return {name: open_dataset(path, split=name, format=format, strict=strict) for name in names}


def list_splits(path: str | Path, *, format: str | None = None) -> list[str]:
    path = _existing(Path(path))
    spec = _spec_file(path, format)
    if spec is not None:
        data = load_spec(spec)
        return [k for k in ("train", "val", "test") if data.get(k)]
    return _reader(path, format).splits(path)


def raise_on_errors(dataset: Any, path: str | Path) -> None:
    errors = [i for i in dataset.issues if i.level == "error"]
    if not errors:
        return
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise DataError(f"{errors[0]}{more}; run `visiontool data check {path}` to list every problem")


def _check_task(dataset: Any, path: str | Path, task: str | tuple[str, ...] | None) -> None:
    """`task`: the kind of data set wanted, or a tuple of the kinds that will do."""
    wanted = (task,) if isinstance(task, str) else tuple(task or ())
    if not wanted or dataset.task in wanted:
        return
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise ConfigError(f"task must be 'detect' or 'classify', got {unknown[0]!r}")
    raise DataError(
        f"{path} is a {TASKS[dataset.task]} data set ({dataset.format}); "
        f"this needs a {' or '.join(TASKS[t] for t in wanted)} data set"
    )


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return path


def _open(path: Path, *, split: str | None, format: str | None) -> Any:
    from visiontool.data.records import clear_path_cache

    clear_path_cache()  # folder links are resolved afresh on every read
    path = _existing(path)
    spec = _spec_file(path, format)
    if spec is not None:
        return _open_spec(spec, split=split, format=format)
    return _reader(path, format).read(path, split)


def _reader(path: Path, format: str | None) -> Any:
    from visiontool import registry

    if format:
        return registry.get("format", format)
    for spec in registry.specs("format"):
        if spec.probe(path):
            return spec
    raise DataError(
        f"{path}: cannot tell the data set format (expected a COCO json, a VOC folder, "
        "YOLO images/+labels/, class folders or a CSV); pass --format"
    )


def _spec_file(path: Path, format: str | None) -> Path | None:
    """The YAML/JSON spec `path` is or holds (a YOLO data.yaml is one), else None."""
    if path.is_file():
        if path.suffix.lower() in SPEC_SUFFIXES:
            return path
        if path.suffix.lower() == ".json" and not _is_coco(path):
            return path
        return None
    if format not in (None, "yolo"):
        return None
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (path / name).is_file():
            return path / name
    return None


def _is_coco(path: Path) -> bool:
    from visiontool.data.formats.coco import probe

    return probe(path)


def load_spec(path: Path) -> dict[str, Any]:
    """Parse a data spec, with the file and line of a syntax error.

    Bounded: the file is read only up to the size cap, YAML aliases (`*name`, the "billion
    laughs" blow-up) and python tags are refused, and nesting too deep is an error.
    """
    import yaml

    from visiontool.data.records import read_text_capped

    try:
        text = read_text_capped(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read data spec ({exc})") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_spec_loader())  # noqa: S506 - a SafeLoader
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    except RecursionError:
        raise DataError(f"{path}: invalid data spec: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict) or not any(data.get(k) for k in ("train", "val", "test")):
        raise DataError(f"{path}: a data spec needs 'train' and/or 'val' entries")
    return data


def _spec_loader() -> Any:
    """A `yaml.SafeLoader` that refuses aliases: a data spec never needs one, and nested
    aliases make a few hundred bytes expand to gigabytes."""
    import yaml

    class SpecLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"aliases (*{event.anchor}) are not allowed", event.start_mark
                )
            return super().compose_node(parent, index)

    return SpecLoader


def spec_names(data: dict[str, Any], path: Path) -> list[str] | None:
    names = data.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        try:
            ordered = sorted((int(k), str(v)) for k, v in names.items())
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: 'names' keys must be class numbers") from exc
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise DataError(f"{path}: 'names' must number classes 0..{len(ordered) - 1}")
        result = [v for _, v in ordered]
    elif isinstance(names, list):
        result = [str(n) for n in names]
    else:
        raise DataError(f"{path}: 'names' must be a list or a mapping")
    from visiontool.data.records import name_problem

    for k, name in enumerate(result):
        problem = name_problem(name)
        if problem:
            raise DataError(f"{path}: 'names' entry {k} ({name!r}) {problem}; fix the name")
    return result


def _open_spec(spec: Path, *, split: str | None, format: str | None) -> Any:
    data = load_spec(spec)
    available = [k for k in ("train", "val", "test") if data.get(k)]
    from visiontool.data.formats.common import match_split

    name = match_split(split, available, spec)
    root = _spec_root(spec, data)
    entries = _spec_entries(spec, data, name, root)
    format = format or data.get("format")
    classes = spec_names(data, spec)
    if len(entries) > 1:
        if format not in (None, "yolo"):
            raise DataError(f"{spec}: split {name!r} lists several entries; only YOLO allows that")
        from visiontool.data.formats import yolo

        dataset = yolo.read_entries(entries, root=root, classes=classes, split=name)
        return dataset
    entry_path = entries[0]
    reader = _reader_for_entry(entry_path, format)
    if reader.name == "yolo":
        from visiontool.data.formats import yolo

        dataset = yolo.read(entry_path, None, classes=classes, root=root)
    elif reader.name == "coco":
        dataset = reader.read(entry_path, None)
    else:
        dataset = reader.read(entry_path, None, classes=classes)
    dataset.split = name
    return dataset


def _spec_entries(spec: Path, data: dict[str, Any], name: str, root: Path) -> list[Path]:
    """The path(s) of split `name`: each must exist and lie inside the data set root."""
    from visiontool.data.records import outside_reason

    value = data[name]
    values = value if isinstance(value, list) else [value]
    entries = []
    for k, item in enumerate(values):
        label = f"{name!r}" if not isinstance(value, list) else f"{name!r} entry {k}"
        if not isinstance(item, (str, int, float)) or isinstance(item, bool) or not str(item):
            raise DataError(f"{spec}: split {label} must be a path, got {item!r}")
        entry = root / str(item)
        problem = outside_reason(entry, root)
        if problem:
            raise DataError(
                f"{spec}: split {label} ({item!r}) {problem}; "
                "set 'path:' to the data set folder and list splits inside it"
            )
        if not entry.exists():
            raise DataError(f"{spec}: split {label} points to {entry}, which does not exist")
        entries.append(entry)
    if not entries:
        raise DataError(f"{spec}: split {name!r} is an empty list")
    return entries


def _spec_root(spec: Path, data: dict[str, Any]) -> Path:
    """The spec's `path` (relative to the spec file); the spec's folder when it is missing or
    does not exist (YOLO data.yaml files often carry the author's own absolute path)."""
    base = spec.parent
    given = data.get("path")
    if given:
        candidate = Path(str(given))
        candidate = candidate if candidate.is_absolute() else base / candidate
        if candidate.is_dir():
            return candidate
    return base


def _reader_for_entry(path: Path, format: str | None) -> Any:
    """A spec entry that is a plain folder of images (or a .txt list) is a YOLO split."""
    from visiontool import registry
    from visiontool.data.formats.common import list_images

    if format:
        return registry.get("format", format)
    if path.is_file() and path.suffix.lower() == ".txt":
        return registry.get("format", "yolo")
    if path.is_dir() and list_images(path):
        return registry.get("format", "yolo")
    return _reader(path, None)
