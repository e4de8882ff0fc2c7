"""Finding and reading input files; writing outputs atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aim_cli.errors import AimError, Interrupted
from aim_cli.limits import TEXT_BYTES, Limit

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


# The opt-in that lets a data set name files outside its own folder (README "Security model").
ALLOW_OUTSIDE_FLAG = "--allow-outside-paths"
# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; O_NOCTTY: a
# terminal given as input never becomes the controlling terminal. Absent flags (Windows) are 0.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def read_regular_file(
    path: Path, limit: int | Limit, error: type[AimError], what: str, within: Path | None = None
) -> bytes:
    """The one gate for every file aim reads: a regular file of at most `limit` bytes, read without blocking.

    Directories, devices (/dev/zero would be read without end), FIFOs and sockets (which would
    block) are refused, as is a file over `limit`. With `within`, a file whose real path (after
    symlinks) lies outside that folder is refused too. The kind, size and place are judged on
    the opened descriptor, so a FIFO or symlink swapped in after a check is still caught.
    Errors are one line of `error` naming `what` and `path`, with the fix.
    """
    max_bytes = limit.value() if isinstance(limit, Limit) else limit
    _check_kind(_stat(path, error, what), path, error, what)  # before opening: opening a device can act
    fd = _open_nonblocking(path, error, what)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        _check_kind(info, path, error, what)
        if within is not None:
            check_inside(_opened_path(fd, path), path, within, error, what)
        if info.st_size > max_bytes:
            raise error(
                f"{what} {path} is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit", _limit_hint(limit)
            )
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # it grew while we read it
        raise error(f"{what} {path} is over the {max_bytes:,}-byte limit", _limit_hint(limit))
    return data


def read_text_file(path: Path, limit: int | Limit, error: type[AimError], what: str, within: Path | None = None) -> str:
    """`read_regular_file`, decoded as UTF-8 (a byte-order mark is dropped)."""
    data = read_regular_file(path, limit, error, what, within)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start:,})", "save it as UTF-8") from None


def printable_path(path: object) -> str:
    """A path for an error message, NUL and other control characters shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def _stat(path: Path, error: type[AimError], what: str) -> os.stat_result:
    """os.stat, with a missing or unreachable file (or an impossible name) as one line of `error`."""
    if "\x00" in str(path):  # no file system allows it; os.stat would raise ValueError
        raise error(
            f"{what} {printable_path(path)}: a file name cannot hold a NUL byte", "check where the name came from"
        )
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} not found", "check the path") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def _open_nonblocking(path: Path, error: type[AimError], what: str) -> int:
    """A read-only descriptor for `path`, opened so that a FIFO cannot block."""
    try:
        return os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise error(f"{what} {path} not found", "check the path") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def _check_kind(info: os.stat_result, path: Path, error: type[AimError], what: str) -> None:
    """Refuse anything but a regular file."""
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a directory", "give a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(
            f"{what} {path} is not a regular file (a device, pipe or socket)",
            "save the content to a regular file and give that",
        )


def _opened_path(fd: int, path: Path) -> str:
    """The real path of the file behind `fd` (Linux /proc), else `path` with its symlinks resolved."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def check_inside(real: str | Path, path: Path, within: Path, error: type[AimError], what: str) -> None:
    """Refuse `path` when its real location `real` is not inside the folder `within`."""
    if not Path(real).is_relative_to(Path(within).resolve()):
        raise error(
            f"{what} {path} lies outside {within}",
            f"a data set's files must stay inside its folder; pass {ALLOW_OUTSIDE_FLAG} to read them anyway",
        )


def _limit_hint(limit: int | Limit) -> str:
    """How to get past a size bound: its environment variable, when it has one."""
    return limit.hint() if isinstance(limit, Limit) else "give a smaller file"


class OutputError(AimError):
    """An output cannot be written where the user asked (permissions, full disk, a clash)."""


class NonFiniteError(OutputError):
    """A result holds NaN or infinity, which JSON cannot carry: refused rather than written."""


NAME_MAX_FALLBACK = 255
_MKSTEMP_CHARS = 8  # the random part tempfile.mkstemp adds


def name_max(directory: Path) -> int:
    """The longest file name, in bytes, the file system at `directory` (or its nearest existing parent) takes."""
    probe = Path(directory)
    while not os.path.isdir(probe) and probe != probe.parent:  # an output folder may not exist yet
        probe = probe.parent
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX_FALLBACK
    return limit if limit and limit > 0 else NAME_MAX_FALLBACK


def name_bytes(name: str) -> int:
    """A file name's length as the file system counts it."""
    return len(os.fsencode(name))


def name_problem(path: Path) -> str | None:
    """Why `path`'s own name cannot exist on its file system (too many bytes), or None."""
    limit = name_max(path.parent)
    size = name_bytes(path.name)
    return f"its name is {size} bytes, over the file system's {limit}-byte limit" if size > limit else None


def _refuse_long_name(path: Path, what: str) -> None:
    """Fail before any work when an output's name cannot exist."""
    problem = name_problem(path)
    if problem is not None:
        raise OutputError(f"{what} {path}: {problem}", "choose a shorter name")


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
    _refuse_long_name(path, "output")
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
    _refuse_long_name(path, "output directory")
    if path.exists() and not path.is_dir():
        raise OutputError(f"output directory {path} is a file", "give a directory path")
    if not path.parent.is_dir():
        raise OutputError(f"output directory {path}: parent {path.parent} does not exist", "create it first")
    if path.is_dir():
        _probe_writable(path, path)
    else:
        _probe_writable(path.parent, path)
        if create:
            with contextlib.suppress(FileExistsError):
                path.mkdir()
    return path


def check_output_paths(outputs: Iterable[tuple[str, Path]], root: Path) -> None:
    """Refuse, before any work, a planned output under `root` that something else stands in the way of.

    A folder where a file will go (e.g. a directory named summary.jsonl), a device, or a file
    where a sub-folder must be created would otherwise stop the run after work was done.
    """
    for label, path in outputs:
        if os.path.lexists(path) and not os.path.isfile(path):
            kind = "a directory" if os.path.isdir(path) else "not a regular file"
            raise OutputError(f"{label} {path} is {kind}", "move it away or choose another output directory")
        parent = path.parent
        while parent != root and root in parent.parents:
            if os.path.lexists(parent) and not os.path.isdir(parent):
                raise OutputError(
                    f"{label} {path}: {parent} is not a directory", "move it away or choose another output directory"
                )
            parent = parent.parent


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
                raise OutputError(f"{label} {path} would overwrite {taken[key]}", "write the output somewhere else")
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


def temp_prefix(path: Path) -> str:
    """The temp-file prefix for `path`: '.NAME.' when the temp name fits the file system, else a hash.

    Any name the file system accepts must also be writable atomically, so a long NAME is
    replaced by a short digest of it rather than overflowing the name limit.
    """
    readable = f".{path.name}."
    if name_bytes(readable) + _MKSTEMP_CHARS + len(".part") <= name_max(path.parent):
        return readable
    return f".aim-{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}."


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    A replaced file keeps its permission bits; OS failures name `path`, never the temp file.
    """
    binary = "b" in mode
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".part")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp_name, _existing_mode(path))  # mkstemp makes 0600
        opened = os.fdopen(fd, mode) if binary else os.fdopen(fd, mode, encoding="utf-8", newline=newline)
        with opened as handle:
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
        self._csv: csv.DictWriter[str] | None = None
        self._closed = False
        self.count = 0
        self.replaces = path.exists()  # an older file is there: an interruption must not lose it

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        try:
            line = json_text(record, self.path)  # refuses NaN/inf for both formats
        except NonFiniteError:
            self.close(success=False)
            raise
        try:
            if self.path.suffix.lower() == ".csv":
                if self._csv is None:
                    self._csv = csv.DictWriter(self._handle, fieldnames=self.fieldnames or list(record))
                    self._csv.writeheader()
                self._csv.writerow({k: _csv_value(v) for k, v in record.items()})
            else:
                self._handle.write(line + "\n")
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

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(success=exc_type is None)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of an earlier .jsonl/.csv output, for --resume; a missing file has none.

    --resume rewrites the file, so a line that is not a record would be lost: it is refused,
    except a last line cut short (a copy or a disk that filled up outside aim), whose input is
    simply processed again.
    """
    if not os.path.lexists(path):
        return []
    text = read_text_file(path, TEXT_BYTES, AimError, "--resume: output")
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
            if number == len(lines) and not text.endswith("\n"):
                continue  # cut short: its input runs again
        if not isinstance(record, dict):
            raise AimError(
                f"--resume: line {number} of {path} is not a record aim wrote, and resuming rewrites the file",
                "remove that line, or write to a new file",
            )
        records.append(record)
    return records


def _csv_value(value: Any) -> Any:
    """Flatten nested values for a CSV cell."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def save_png_atomic(image: Image.Image, path: Path) -> None:
    """Write a PNG so that readers never see a partial file."""
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")


def _non_finite_at(data: Any, where: str = "") -> str | None:
    """The dotted key path of the first NaN or infinity in `data`, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return where or "the value"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite_at(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def json_text(data: Any, path: Path, indent: int | None = None) -> str:
    """`data` as JSON for `path`; NaN and infinity are refused, since strict JSON readers reject them."""
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, indent=indent)
    except ValueError:
        where = _non_finite_at(data) or "a value"
        raise NonFiniteError(
            f"cannot write {path}: {where} is not a finite number (NaN or infinity)",
            "the model produced non-finite output; nothing was written to this file",
        ) from None


def write_json_atomic(data: Any, path: Path) -> None:
    """Write a JSON document atomically (serialised first, so a refused document creates no temp file)."""
    text = json_text(data, path, indent=2)
    with atomic_open(path, "w") as handle:
        handle.write(text + "\n")
