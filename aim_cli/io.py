"""Finding and reading input files; writing outputs atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Sequence

from aim_cli.errors import AimError

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


def check_output_file(path: Path, suffixes: Sequence[str]) -> Path:
    """Validate an output file path before any work is done, so no run is wasted."""
    if path.suffix.lower() not in suffixes:
        raise AimError(f"output {path}: unsupported file type", f"use one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise AimError(f"output {path}: directory {path.parent} does not exist", "create it first")
    if path.is_dir():
        raise AimError(f"output {path} is a directory", "give a file name")
    return path


def check_output_dir(path: Path) -> Path:
    """Create an output directory if its parent exists; fail clearly otherwise."""
    if path.exists() and not path.is_dir():
        raise AimError(f"output directory {path} is a file", "give a directory path")
    if not path.parent.is_dir():
        raise AimError(f"output directory {path}: parent {path.parent} does not exist", "create it first")
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    binary = "b" in mode
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.chmod(tmp_name, _FILE_MODE)  # mkstemp makes 0600; outputs get the usual umask-based mode
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": newline})) as handle:
            yield handle
        os.replace(tmp_name, path)
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

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self.path.suffix.lower() == ".csv":
            if self._csv is None:
                self._csv = csv.DictWriter(self._handle, fieldnames=self.fieldnames or list(record))
                self._csv.writeheader()
            self._csv.writerow({k: _csv_value(v) for k, v in record.items()})
        else:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self, success: bool = True) -> None:
        """Publish the file on success; discard the partial file otherwise."""
        if success:
            self._context.__exit__(None, None, None)
        else:
            with contextlib.suppress(BaseException):
                self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(success=exc_type is None)


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
