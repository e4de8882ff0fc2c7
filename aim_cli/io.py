"""Finding and reading input files; writing outputs atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from aim_cli.errors import AimError, Interrupted

if TYPE_CHECKING:
    from PIL import Image


def _umask_mode() -> int:
    """The mode open() would give a new file (0666 minus the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def find_images(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files, directories (recursive) and globs into image paths.

    Returns the images found (sorted, de-duplicated) and the inputs that matched nothing.
    """
    found: list[Path] = []
    unmatched: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            matches = [path]  # an explicit file is taken whatever its suffix; decoding decides
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if matches:
            found.extend(matches)
        else:
            unmatched.append(item)
    unique = list(dict.fromkeys(found))
    return unique, unmatched


def read_regular_file(path: Path, max_bytes: int, error: type[AimError], what: str) -> bytes:
    """Read a regular file of at most `max_bytes`; devices, FIFOs and oversize files are refused.

    A device such as /dev/zero would otherwise be read without end, and a FIFO would block.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} not found", "check the path") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a directory", "give a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is not a regular file (a device, pipe or socket)", "give a file")
    if info.st_size > max_bytes:
        raise error(f"{what} {path} is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while we read it
        raise error(f"{what} {path} is over the {max_bytes:,}-byte limit")
    return data


class OutputError(AimError):
    """An output cannot be written where the user asked (permissions, full disk, a clash)."""


def _probe_writable(directory: Path, shown: Path) -> None:
    """Create and remove a temp file in `directory`, so an unwritable target fails before any work."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".aim-probe.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {exc.strerror or exc}", "choose a writable location") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path: Path, suffixes: Sequence[str]) -> Path:
    """Validate an output file path before any work is done, so no run is wasted."""
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"output {path}: unsupported file type", f"use one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise OutputError(f"output {path}: directory {path.parent} does not exist", "create it first")
    if path.is_dir():
        raise OutputError(f"output {path} is a directory", "give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"output {path} is not a regular file (a device, pipe or socket)", "give a file name")
    _probe_writable(path.parent, path)
    return path


def check_output_dir(path: Path, create: bool = True) -> Path:
    """Check (and create, if its parent exists) an output directory; fail clearly otherwise."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output directory {path} is a file", "give a directory path")
    if not path.parent.is_dir():
        raise OutputError(f"output directory {path}: parent {path.parent} does not exist", "create it first")
    if path.is_dir():
        _probe_writable(path, path)
    else:
        _probe_writable(path.parent, path)
        if create:
            try:
                path.mkdir()
            except FileExistsError:
                pass
    return path


def _identity(path: Path) -> tuple[str, object]:
    """What makes two paths the same file: device and inode when it exists, else the resolved path."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    return ("inode", (info.st_dev, info.st_ino))


def _inside(path: Path, directory: Path) -> bool:
    """Whether `path` (resolved) lies inside `directory` (resolved)."""
    return Path(path).resolve().is_relative_to(Path(directory).resolve())


def _linked_into(path: Path, directory: Path) -> bool:
    """Whether the existing file `path` is a hard link to a file under `directory`."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    if info.st_nlink < 2 or not stat.S_ISREG(info.st_mode):
        return False  # only a file with several names can be one under another name
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                other = os.stat(os.path.join(root, name))
                if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
                    return True
    return False


def refuse_clobbering(outputs: Iterable[tuple[str, Path]], inputs: Iterable[tuple[str, Path]]) -> None:
    """Fail if any output would replace an input (same path, symlink or hard link) or another output.

    `outputs` and `inputs` are (how the user named it, path) pairs, e.g. ("-o", Path("q.jsonl")).
    An input that is a directory (a --data folder, a local --model, --masks) owns everything
    under it: no output may be written inside it.
    """
    inputs = list(inputs)
    folders = [(label, Path(path)) for label, path in inputs if Path(path).is_dir()]
    taken: dict[tuple[str, object], str] = {}
    for label, path in inputs:
        taken.setdefault(_identity(path), f"{label} {path}")
        taken.setdefault(("path", str(Path(path).resolve())), f"{label} {path}")
    for label, path in outputs:
        keys = {_identity(path), ("path", str(Path(path).resolve()))}
        for key in keys:
            if key in taken:
                raise OutputError(
                    f"{label} {path} would overwrite {taken[key]}", "write the output somewhere else"
                )
        for folder_label, folder in folders:
            if _inside(path, folder) or _linked_into(path, folder):
                raise OutputError(
                    f"{label} {path} would write inside {folder_label} {folder}", "write the output somewhere else"
                )
        for key in keys:
            taken[key] = f"{label} {path}"


def _existing_mode(path: Path) -> int:
    """The permission bits to give a file that replaces `path`: its own if it exists, else umask's."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return _FILE_MODE


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    A replaced file keeps its permission bits; OS failures name `path`, never the temp file.
    """
    binary = "b" in mode
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp_name, _existing_mode(path))  # mkstemp makes 0600
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": newline})) as handle:
            yield handle
        os.replace(tmp_name, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


class RecordWriter:
    """Stream records to a .jsonl or .csv file, made visible atomically on close."""

    def __init__(self, path: Path, fieldnames: Sequence[str] | None = None) -> None:
        self.path = path
        self.fieldnames = list(fieldnames or [])
        self._context = atomic_open(path, "w", newline="")
        self._handle = self._context.__enter__()
        self._csv: csv.DictWriter | None = None
        self._closed = False
        self.count = 0
        self.replaces = path.exists()  # an older file is there: an interruption must not lose it

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        try:
            if self.path.suffix.lower() == ".csv":
                if self._csv is None:
                    self._csv = csv.DictWriter(self._handle, fieldnames=self.fieldnames or list(record))
                    self._csv.writeheader()
                self._csv.writerow({k: _csv_value(v) for k, v in record.items()})
            else:
                self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:  # e.g. a full disk: name the user's file, not the hidden temp file
            self.close(success=False)
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.count += 1

    def close(self, success: bool = True) -> bool:
        """Publish the file if it succeeded and holds records; else discard it, keeping any old file.

        Returns whether the file was published. An empty result never replaces an existing file.
        """
        if self._closed:
            return False
        self._closed = True
        if success and self.count:
            self._context.__exit__(None, None, None)
            return True
        with contextlib.suppress(BaseException):
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
        return False

    def abandon(self, exc: BaseException, replace_existing: bool = True) -> bool:
        """Close after `exc` stopped the run: keep the records so far only when a signal stopped it.

        An interrupted night run keeps its finished records (whole lines, published atomically)
        so that `--resume` can continue it; any other failure discards the partial file. With
        `replace_existing` False, an older file at the path is kept as it was instead.
        """
        keep = isinstance(exc, Interrupted) and (replace_existing or not self.replaces)
        return self.close(success=keep)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(success=exc_type is None)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of an earlier .jsonl/.csv output, for --resume; a missing file has none.

    Unreadable lines (e.g. a file cut short by a crash outside aim) are dropped: their inputs
    are simply processed again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise AimError(f"--resume: cannot read {path} ({exc})", "remove it, or run without --resume") from None
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _csv_value(value: Any) -> Any:
    """Flatten nested values for a CSV cell."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def save_png_atomic(image: Image.Image, path: Path) -> None:
    """Write a PNG so that readers never see a partial file."""
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")


def write_json_atomic(data: Any, path: Path) -> None:
    """Write a JSON document atomically."""
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
