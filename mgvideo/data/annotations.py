"""Annotation readers: Kinetics-style lists, Something-Something V2 JSON, Charades frame lists, and a generic
multi-label list (`formats.FORMATS` says which format a dataset uses; `formats.read_annotations` picks by
name). Each returns an `Annotations` of `VideoRecord`s; a bad row raises AnnotationError naming
file and line, or, when an `errors` list is passed (for `mgvideo data check`), is appended there instead.
Relative video paths resolve against `root`, or by default against the annotation file's folder;
`missing_videos` finds the listed videos that are not there, before any is read.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mgvideo.errors import AnnotationError

LIST_FOLDER_AT = 16  # from this many listed files in one folder, one listing is cheaper than a stat each


@dataclass(frozen=True)
class VideoRecord:
    """One video: its file, label(s) and the annotation line it came from."""

    path: str
    label: int | tuple[int, ...]  # a class id, or the class ids of a multi-label video
    source: str = ""
    line: int = 0
    frame_labels: tuple[tuple[int, ...], ...] | None = None  # Charades: labels of each frame
    frame_paths: tuple[str, ...] | None = None  # Charades: the video stored as image files


@dataclass
class Annotations:
    records: list[VideoRecord]
    num_classes: int
    multi_label: bool = False
    class_names: list[str] = field(default_factory=list)


def _read_lines(path: str | os.PathLike, what: str = "annotation file") -> list[str]:
    """The lines of a text file; a missing or unreadable one raises AnnotationError naming it."""
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such {what}") from None
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read {what}: {err.strerror or err}") from None


def _fail(errors: list | None, err: AnnotationError, line: int = 0) -> None:
    """Raise `err`, or collect it (with its line, 0 for the whole file) when `errors` is a list."""
    err.line = line
    if errors is None:
        raise err
    errors.append(err)


def _join(root: str | os.PathLike | None, path: str, listing: str | os.PathLike = "") -> str:
    """Resolve a listed path: against `root`, or when root is None against the listing file's folder."""
    if root is None:
        root = os.path.dirname(os.path.abspath(listing)) if listing else ""
    return path if os.path.isabs(path) or not root else os.path.join(root, path)


def _split(line: str, sep: str | None) -> list[str]:
    """'path label' -> [path, label]: on the last `sep`, or by default the last whitespace run (last comma
    when there is no whitespace), so paths may contain the separator."""
    if sep is None:
        sep = None if any(ch.isspace() for ch in line) else ","
    parts = line.rsplit(sep, 1)
    return [p.strip() for p in parts]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """A class-list file: one name per line in id order (a trailing ' id' or ',id' column is allowed)."""
    names = []
    for n, raw in enumerate(_read_lines(path, "class list"), 1):
        line = raw.strip()
        if not line:
            continue
        parts = _split(line, None)
        if len(parts) == 2 and parts[1].isdigit():
            if int(parts[1]) != len(names):
                raise AnnotationError(f"{path}:{n}: class id {parts[1]} out of order (expected {len(names)})")
            line = parts[0]
        names.append(line)
    if not names:
        raise AnnotationError(f"{path}: class list is empty")
    return names


HEADER_WORDS = {"path", "video", "video_path", "filename", "file", "label", "labels", "class", "class_id",
                "label_id", "category", "class_name"}


def _is_header(parts: list[str]) -> bool:
    """A first row such as 'path label' or 'video,class' names columns, not a video."""
    return len(parts) == 2 and parts[1].lower() in HEADER_WORDS and parts[0].lower() in HEADER_WORDS


def read_kinetics(path: str | os.PathLike, root: str | os.PathLike | None = None, sep: str | None = None,
                  classes: str | os.PathLike | list[str] | None = None,
                  errors: list | None = None) -> Annotations:
    """A `path label` list; labels are ids, or names resolved by `classes` (a file or list), else by the
    sorted names in the file itself (give `classes` so train and val agree)."""
    rows = []
    for n, raw in enumerate(_read_lines(path), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = _split(line, sep)
        if not rows and _is_header(parts):
            continue
        if len(parts) != 2 or not parts[0] or not parts[1]:
            _fail(errors, AnnotationError(f"{path}:{n}: expected 'path{sep or ' '}label', got {raw!r}"), n)
            continue
        rows.append((n, parts[0], parts[1]))
    names = read_class_names(classes) if isinstance(classes, (str, os.PathLike)) else classes
    by_id = all(label.lstrip("-").isdigit() for _, _, label in rows) and names is None
    if names is None and not by_id:
        names = sorted({label for _, _, label in rows})
    lookup = {name: i for i, name in enumerate(names or [])}
    records = []
    for n, video, label in rows:
        if label.isdigit() and (by_id or label not in lookup):
            cid = int(label)
        elif label in lookup:
            cid = lookup[label]
        else:
            _fail(errors, AnnotationError(f"{path}:{n}: unknown label {label!r} (not in the class list)"), n)
            continue
        if names is not None and not 0 <= cid < len(names):
            _fail(errors, AnnotationError(f"{path}:{n}: label id {cid} outside 0..{len(names) - 1}"), n)
            continue
        records.append(VideoRecord(_join(root, video, path), cid, str(path), n))
    num_classes = len(names) if names is not None else max((r.label for r in records), default=-1) + 1
    return Annotations(records, num_classes, False, list(names or []))


def read_multilabel(path: str | os.PathLike, root: str | os.PathLike | None = None, sep: str | None = None,
                    num_classes: int | None = None, errors: list | None = None) -> Annotations:
    """A `path id,id,...` list of multi-label videos (an empty label column means no class)."""
    records = []
    for n, raw in enumerate(_read_lines(path), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = _split(line, sep) if (sep or any(c.isspace() for c in line)) else [line, ""]
        ids = _parse_ids(parts[1] if len(parts) == 2 else None)
        if len(parts) != 2 or ids is None:
            _fail(errors, AnnotationError(f"{path}:{n}: expected 'path id,id,...', got {raw!r}"), n)
            continue
        records.append(VideoRecord(_join(root, parts[0], path), ids, str(path), n))
    return Annotations(records, _num_classes(path, records, num_classes, errors), True)


def _parse_ids(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    text = text.strip().strip('"')
    if not text:
        return ()
    items = [t.strip() for t in text.split(",")]
    return tuple(int(t) for t in items) if all(t.isdigit() for t in items) else None


def _num_classes(path, records: list[VideoRecord], given: int | None, errors: list | None) -> int:
    seen = max((max(r.label) for r in records if r.label), default=-1) + 1
    if given is not None and seen > given:
        _fail(errors, AnnotationError(f"{path}: label id {seen - 1} outside 0..{given - 1}"))
    return given if given is not None else seen


def read_ssv2(split: str | os.PathLike, labels: str | os.PathLike, root: str | os.PathLike | None = None,
              ext: str = ".webm", errors: list | None = None) -> Annotations:
    """Something-Something V2: a split JSON (entries with id and template) and the labels JSON mapping
    template (brackets stripped) to class id. Errors name the entry number as the line."""
    classes, entries = _load_json(labels), _load_json(split)
    if not isinstance(classes, dict) or not isinstance(entries, list):
        raise AnnotationError(f"{labels} must hold a {{template: id}} object and {split} a list of entries")
    lookup = {name: int(cid) for name, cid in classes.items()}
    names = [name for name, _ in sorted(lookup.items(), key=lambda kv: kv[1])]
    records = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            _fail(errors, AnnotationError(f"{split}: entry {n}: needs 'id' and 'template'"), n)
            continue
        template = entry["template"].replace("[", "").replace("]", "")
        if template not in lookup:
            err = AnnotationError(f"{split}: entry {n}: unknown label {template!r} (not in {labels})")
            _fail(errors, err, n)
            continue
        video = _join(root, f"{entry['id']}{ext}", split)
        records.append(VideoRecord(video, lookup[template], str(split), n))
    return Annotations(records, len(names), False, names)


def _load_json(path: str | os.PathLike):
    try:
        return json.loads("\n".join(_read_lines(path, "JSON file")))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err


def read_charades(path: str | os.PathLike, root: str | os.PathLike | None = None,
                  num_classes: int | None = None, errors: list | None = None) -> Annotations:
    """Charades frame lists: a header, then `original_vido_id video_id frame_id path labels` per frame.
    Rows of one video either name image files (one per frame) or all name the same video file. A video's
    label is the union of its frames' labels; the dataset narrows it to the sampled span."""
    videos: OrderedDict[str, list] = OrderedDict()
    lines = _read_lines(path)
    for n, raw in enumerate(lines, 1):
        parts = raw.split()
        if n == 1 and parts and not parts[-1][:1].isdigit() and "original_vido_id" in raw:
            continue  # the header
        if not parts:
            continue
        ids = _parse_ids(parts[4] if len(parts) == 5 else ("" if len(parts) == 4 else None))
        if len(parts) not in (4, 5) or ids is None or not parts[2].isdigit():
            _fail(errors, AnnotationError(f"{path}:{n}: expected 'original_vido_id video_id frame_id path "
                                          f"labels', got {raw!r}"), n)
            continue
        videos.setdefault(parts[0], []).append((n, int(parts[2]), _join(root, parts[3], path), ids))
    records = []
    for rows in videos.values():
        rows.sort(key=lambda r: r[1])
        frame_labels = tuple(r[3] for r in rows)
        union = tuple(sorted({c for labels in frame_labels for c in labels}))
        paths = [r[2] for r in rows]
        single_file = len(set(paths)) == 1
        records.append(VideoRecord(paths[0], union, str(path), rows[0][0], frame_labels,
                                   None if single_file else tuple(paths)))
    return Annotations(records, _num_classes(path, records, num_classes, errors), True)


def read_ssv2_list(path: str | os.PathLike, root: str | os.PathLike | None = None, errors: list | None = None,
                   **options) -> Annotations:
    """`read_ssv2` with the readers' common signature (`formats.DatasetFormat.reader`): the labels JSON
    comes as `labels=`."""
    if "labels" not in options:
        raise AnnotationError(f"{path}: the ssv2 format needs the labels JSON (labels=...)")
    return read_ssv2(path, options.pop("labels"), root, errors=errors, **options)


def existing_files(paths: Iterable[str]) -> set[str]:
    """Those of `paths` that exist. A folder holding many of them is listed once (much cheaper than a
    stat per file on a network file system); the others are looked up one by one."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_folder[os.path.dirname(path)].append(path)
    found: set[str] = set()
    for folder, group in by_folder.items():
        try:
            names = set(os.listdir(folder or ".")) if len(group) >= LIST_FOLDER_AT else None
        except (FileNotFoundError, NotADirectoryError):
            continue  # no such folder: none of them exists
        except OSError:
            names = None  # a folder we may not list may still hold readable files
        if names is None:
            found.update(p for p in group if os.path.exists(p))
        else:
            found.update(p for p in group if os.path.basename(p) in names)
    return found


def missing_videos(records: Sequence[VideoRecord], stored: Callable[[str], bool] | None = None) -> list[int]:
    """Indices of the records whose video is not there: its file does not exist (for a video stored as
    image files, its first frame), and `stored` (a store's lookup: it serves videos without their
    originals) does not know it either. One listing per folder or one stat per video, read nothing."""
    unknown = [i for i, r in enumerate(records) if r.frame_paths or stored is None or not stored(r.path)]
    found = existing_files(records[i].path for i in unknown)  # a frame list's path is its first frame's
    return [i for i in unknown if records[i].path not in found]
