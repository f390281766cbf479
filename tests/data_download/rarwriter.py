"""A minimal writer of store-only (uncompressed) RAR 5 archives, for test fixtures.

No free tool *creates* RAR files, yet UCF101 and HMDB51 ship as RAR (HMDB51 as a RAR of RARs),
so the tests build their fixtures with this.  Only what ``rarfile`` needs to read stored entries
is written: signature, main header, one file header + data per entry, end-of-archive header,
each header protected by its CRC32 (format: https://www.rarlab.com/technote.htm).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

RAR5_SIGNATURE = b"Rar!\x1a\x07\x01\x00"
_HEAD_MAIN, _HEAD_FILE, _HEAD_END = 1, 2, 5
_HFL_DATA = 0x0002
_FILE_DIR, _FILE_MTIME, _FILE_CRC = 0x0001, 0x0002, 0x0004
_HOST_UNIX = 1


def _vint(value: int) -> bytes:
    """RAR 5 variable-length integer: 7 bits per byte, low bits first, high bit = more follows."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _block(body: bytes) -> bytes:
    """Prefix a header body (type, flags, fields) with its size and CRC32."""
    sized = _vint(len(body)) + body
    return struct.pack("<I", zlib.crc32(sized) & 0xFFFFFFFF) + sized


def _file_header(name: str, data: bytes | None, mtime: int, method: int = 0) -> bytes:
    is_dir = data is None
    payload = b"" if data is None else data
    file_flags = _FILE_MTIME | (_FILE_DIR if is_dir else _FILE_CRC)
    body = _vint(_HEAD_FILE) + _vint(0 if is_dir else _HFL_DATA)
    if not is_dir:
        body += _vint(len(payload))
    body += _vint(file_flags) + _vint(len(payload))
    body += _vint(0o40755 if is_dir else 0o100644)
    body += struct.pack("<I", mtime)
    if not is_dir:
        body += struct.pack("<I", zlib.crc32(payload) & 0xFFFFFFFF)
    name_bytes = name.encode("utf-8")
    body += _vint(method << 7) + _vint(_HOST_UNIX) + _vint(len(name_bytes)) + name_bytes
    return _block(body) + payload


def write_rar(path: Path, entries: dict[str, bytes | None], mtime: int = 1_600_000_000, method: int = 0) -> Path:
    """Write ``entries`` (archive name -> bytes, or ``None`` for a directory) as a stored RAR 5 file.

    ``method`` > 0 only *labels* the file entries as compressed (their bytes stay raw, so a real
    unpacker would fail on them): enough to make ``rarfile`` reach for an external tool, which is
    how a test shows what happens when none is installed.
    """
    out = bytearray(RAR5_SIGNATURE)
    out += _block(_vint(_HEAD_MAIN) + _vint(0) + _vint(0))
    for name, data in entries.items():
        out += _file_header(name, data, mtime, method if data is not None else 0)
    out += _block(_vint(_HEAD_END) + _vint(0) + _vint(0))
    Path(path).write_bytes(bytes(out))
    return Path(path)


def rar_bytes(entries: dict[str, bytes | None]) -> bytes:
    """The archive as bytes (for a RAR inside a RAR)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return write_rar(Path(tmp) / "a.rar", entries).read_bytes()
