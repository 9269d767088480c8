"""Reader for Qt binary resource archives (``.rcc``), as shipped by ``gcompris-qt-data``.

Layout (all integers big-endian):

- header: magic ``b"qres"``, ``version`` (u32), ``tree_offset`` (u32), ``data_offset`` (u32),
  ``names_offset`` (u32) and, from version 3, ``flags`` (u32);
- tree: fixed-size nodes (14 bytes, plus an 8-byte modification time from version 2):
  ``name_offset`` (u32), ``flags`` (u16), then for a directory ``child_count`` (u32),
  ``first_child`` (u32), for a file ``country`` (u16), ``language`` (u16), ``data_offset`` (u32);
  node 0 is the root directory;
- names: ``length`` (u16, UTF-16 units), ``hash`` (u32), the name in UTF-16BE;
- data: ``size`` (u32) then the payload. Flag 1: zlib payload prefixed by the uncompressed size
  (u32, ``qCompress`` format); flag 4: a zstd frame (needs the ``zstandard`` module).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"qres"
FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04


class RccError(ValueError):
    """The file is not a readable Qt resource archive."""


@dataclass(frozen=True)
class RccEntry:
    """One file inside an archive: its path and where its payload sits."""

    path: str
    flags: int
    data_offset: int


class RccArchive:
    """Parsed ``.rcc`` archive; :meth:`read` returns an entry's decompressed bytes."""

    def __init__(self, blob: bytes, name: str = "<rcc>") -> None:
        if len(blob) < 20 or blob[:4] != MAGIC:
            raise RccError(f"{name}: not a Qt resource archive (no 'qres' magic)")
        self.name = name
        self.blob = blob
        self.version, self.tree_offset, self.data_offset, self.names_offset = struct.unpack_from(">IIII", blob, 4)
        if self.version not in (1, 2, 3):
            raise RccError(f"{name}: unsupported rcc version {self.version}")
        self.node_size = 14 + (8 if self.version >= 2 else 0)
        self.entries: list[RccEntry] = []
        self._walk(0, "", depth=0)

    @classmethod
    def open(cls, path: Path | str) -> RccArchive:
        return cls(Path(path).read_bytes(), name=str(path))

    def _name(self, offset: int) -> str:
        at = self.names_offset + offset
        (length,) = struct.unpack_from(">H", self.blob, at)
        return self.blob[at + 6 : at + 6 + 2 * length].decode("utf-16-be")

    def _walk(self, node: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise RccError(f"{self.name}: resource tree too deep (corrupt archive?)")
        at = self.tree_offset + node * self.node_size
        if at + 14 > len(self.blob):
            raise RccError(f"{self.name}: tree node {node} beyond the end of the file")
        name_offset, flags = struct.unpack_from(">IH", self.blob, at)
        name = "" if node == 0 else self._name(name_offset)
        path = f"{prefix}/{name}" if prefix else name
        if flags & FLAG_DIRECTORY:
            count, first = struct.unpack_from(">II", self.blob, at + 6)
            for child in range(first, first + count):
                self._walk(child, path, depth + 1)
        else:
            (data_offset,) = struct.unpack_from(">I", self.blob, at + 10)
            self.entries.append(RccEntry(path=path, flags=flags, data_offset=data_offset))

    def read(self, entry: RccEntry) -> bytes:
        """The entry's payload, decompressed. Raises :class:`RccError` when it cannot be."""
        at = self.data_offset + entry.data_offset
        (size,) = struct.unpack_from(">I", self.blob, at)
        payload = self.blob[at + 4 : at + 4 + size]
        if entry.flags & FLAG_COMPRESSED:
            try:
                return zlib.decompress(payload[4:])
            except zlib.error as error:
                raise RccError(f"{self.name}:{entry.path}: bad zlib payload ({error})") from error
        if entry.flags & FLAG_COMPRESSED_ZSTD:
            try:
                import zstandard
            except ImportError:
                raise RccError(f"{self.name}:{entry.path}: zstd-compressed; pip install zstandard to read it") from None
            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 30)
        return payload


def build_rcc(files: dict[str, bytes], compress: bool = True) -> bytes:
    """Write a version-3 archive holding ``files`` (path -> bytes); used by tests to make fixtures.

    Directories are implied by the ``/`` in the paths.
    """
    tree: dict = {}
    for path, data in files.items():
        node = tree
        parts = path.strip("/").split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = data

    names = bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return name_offsets[name]

    data = bytearray()
    nodes: list[bytes] = [b""]  # slot 0 is the root
    slot_names: dict[int, int] = {0: 0}
    queue: list[tuple[int, dict]] = [(0, tree)]
    while queue:  # breadth first: the children of a directory are contiguous
        index, directory = queue.pop(0)
        children = sorted(directory.items())
        first = len(nodes)
        nodes.extend(b"" for _ in children)
        nodes[index] = struct.pack(">IHII", slot_names[index], FLAG_DIRECTORY, len(children), first) + bytes(8)
        for offset, (name, value) in enumerate(children):
            slot = first + offset
            slot_names[slot] = name_offset(name)
            if isinstance(value, dict):
                queue.append((slot, value))
                continue
            payload = struct.pack(">I", len(value)) + zlib.compress(value) if compress else value
            flags = FLAG_COMPRESSED if compress else 0
            nodes[slot] = struct.pack(">IHHHI", slot_names[slot], flags, 0, 0, len(data)) + bytes(8)
            data.extend(struct.pack(">I", len(payload)) + payload)
    header_size = 24
    data_offset = header_size
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = MAGIC + struct.pack(">IIIII", 3, tree_offset, data_offset, names_offset, 0)
    return header + bytes(data) + bytes(names) + b"".join(nodes)
