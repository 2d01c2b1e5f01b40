"""The one loading layer for user files: bounded, checked before anything is allocated.

Every file a user hands apical (configs, energy tables, IR manifests and
arrays, data archives) is read through these functions:

* sizes are checked against limits before a byte is decoded;
* YAML is parsed by a safe loader that refuses duplicate keys, nesting deeper
  than `MAX_DEPTH`, more than `MAX_ALIASES` aliases and documents whose alias
  expansion exceeds `MAX_NODES` nodes (the "billion laughs" bomb), and text
  that is not UTF-8;
* ``.npz`` archives are opened with `zipfile` and every member's ``.npy``
  header (dtype, shape) is checked, and its size counted against a budget,
  before the member is decompressed (a small file cannot make an 11 GiB
  allocation), with ``allow_pickle=False``;
* every fault is one `ApicalError` line naming the file; values are shown
  truncated (`apical.sw.schema.show`) and the contents of a file are never
  echoed.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from apical.sw.errors import ApicalError
from apical.sw.schema import show

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_YAML_BYTES",
    "load_npz",
    "load_yaml",
    "read_bytes",
    "user_path_error",
]

MAX_YAML_BYTES = 1 << 20  # configs, tables and manifests are a few KB; 1 MiB is far beyond any
MAX_DEPTH = 64  # nesting of YAML collections (configs nest 3 deep)
MAX_ALIASES = 1000  # alias uses per document
MAX_NODES = 200_000  # nodes after alias expansion
MAX_ARRAY_BYTES = 1 << 29  # decompressed bytes of one .npz archive (512 MiB)


def user_path_error(p: Path, what: str, e: OSError) -> ApicalError:
    """An `OSError` on a user path as one line (permission errors are the user's to fix)."""
    reason = e.strerror or type(e).__name__
    return ApicalError(f"{p}: cannot read {what} ({reason})")


def read_bytes(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; any fault names the file."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ApicalError(f"{p}: {what} not found" if not p.exists() else f"{p}: {what} is not a regular file")
        size = p.stat().st_size
        if size > max_bytes:
            raise ApicalError(f"{p}: {what} is {size} bytes, more than the {max_bytes} allowed")
        return p.read_bytes()
    except OSError as e:
        raise user_path_error(p, what, e) from None


# --------------------------------------------------------------------------- YAML


class _Refused(yaml.YAMLError):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with bounded nesting and aliases, refusing duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: more than {MAX_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise _Refused(f"line {key_node.start_mark.line + 1}: duplicate key {show(key, 40)}")
        return super().construct_mapping(node, deep)


def _expanded_nodes(node: Any) -> int:
    """Nodes of the document with every alias expanded (memoised: linear in the node graph)."""
    memo: dict[int, int] = {}
    busy: set[int] = set()

    def size(n: Any) -> int:
        k = id(n)
        if k in memo:
            return memo[k]
        if k in busy:
            raise _Refused(f"line {n.start_mark.line + 1}: an alias refers to its own anchor")
        busy.add(k)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(a) + size(b) for a, b in n.value)
        busy.discard(k)
        memo[k] = min(total, MAX_NODES + 1)
        return memo[k]

    return size(node)


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, _Refused):
        return e.msg
    if isinstance(e, yaml.reader.ReaderError):
        return f"unacceptable character #x{e.character:04x} at offset {e.position}" if isinstance(
            e.character, int) else "unacceptable byte"
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or type(e).__name__
    return f"{where}malformed YAML ({' '.join(str(problem).split())})"


def load_yaml(path: str | Path, what: str, *, max_bytes: int = MAX_YAML_BYTES,
              label: str | None = None) -> Any:
    """Parse one YAML document from ``path`` within the limits above; faults name ``label`` or the file."""
    p = Path(path)
    where = label or str(p)
    data = read_bytes(p, what, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApicalError(f"{where}: {what} is not UTF-8 text (invalid byte at offset {e.start})") from None
    return parse_yaml_text(text, where)


def parse_yaml_text(text: str, where: str) -> Any:
    """`load_yaml` on text already read (shipped data); faults name ``where``."""
    loader = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_NODES:
            raise _Refused(f"aliases expand to more than {MAX_NODES} nodes")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ApicalError(f"{where}: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ApicalError(f"{where}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------- .npz

_KINDS = "biuf"  # bool, signed, unsigned, float: the only dtypes apical reads


def load_npz(path: str | Path, what: str, *, max_bytes: int = MAX_ARRAY_BYTES,
             max_file_bytes: int = 1 << 31) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, each header checked before it is decompressed.

    Refused with one line naming the file: not a zip archive (a single ``.npy``
    included), a member that is not ``.npy``, a dtype that is not bool, integer
    or float (objects and pickles above all), a header that does not parse, or
    declared sizes beyond ``max_bytes`` in total.
    """
    p = Path(path)
    try:
        if not p.is_file():
            raise ApicalError(f"{p}: {what} not found" if not p.exists() else f"{p}: {what} is not a regular file")
        if p.stat().st_size > max_file_bytes:
            raise ApicalError(f"{p}: {what} is larger than {max_file_bytes} bytes")
        with open(p, "rb") as f:
            head = f.read(6)
        if head.startswith(b"\x93NUMPY"):
            raise ApicalError(f"{p}: {what} is a single .npy array, not an .npz archive")
        zf = zipfile.ZipFile(p)
    except OSError as e:
        raise user_path_error(p, what, e) from None
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise ApicalError(f"{p}: {what} unreadable (not an .npz zip archive)") from None
    out: dict[str, np.ndarray] = {}
    budget = max_bytes
    with zf:
        for info in zf.infolist():
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else None
            label = show(key if key is not None else name, 60)
            if key is None:
                raise ApicalError(f"{p}: member {label} is not an .npy array")
            try:
                with zf.open(info) as m:
                    version = np.lib.format.read_magic(m)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(m)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(m)
                    else:
                        raise ValueError("unsupported .npy version")
                    if dtype.hasobject or dtype.kind not in _KINDS or dtype.fields is not None:
                        raise ApicalError(f"{p}: array {label}: dtype {show(str(dtype), 40)} is not numeric")
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes > budget:
                        raise ApicalError(
                            f"{p}: array {label} declares {nbytes} bytes; the archive may hold at most "
                            f"{max_bytes} bytes of arrays"
                        )
                    budget -= nbytes
                with zf.open(info) as m:  # the header passed: now read the data (exactly nbytes)
                    arr = np.lib.format.read_array(m, allow_pickle=False)
            except ApicalError:
                raise
            except Exception as e:  # zlib, CRC, truncated data, bad header: all a corrupt member
                raise ApicalError(f"{p}: array {label} unreadable ({type(e).__name__})") from None
            if arr.shape != tuple(shape):
                raise ApicalError(f"{p}: array {label} unreadable (truncated)")
            out[key] = arr
    return out
