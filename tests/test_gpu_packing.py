"""benchmarks/gpu/pack_ort.py: keeping one architecture's GPU code in a library's fatbin section.

The real check was made on onnxruntime-gpu 1.31.1 (cuobjdump extracted the same 600 sm_90 images from the
packed library as from the original); this pins down the container layout rules on an ELF file built
here, so a change to the pruning cannot quietly move a container or leave a stale size behind.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "pack_ort", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "pack_ort.py"
)
pack_ort = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pack_ort)


def _entry(arch: int, payload: bytes) -> bytes:
    """A 64-byte entry header (ELF kind, its size, the payload size, the SM at byte 28) and its payload."""
    assert len(payload) % 8 == 0
    header = bytearray(64)
    struct.pack_into("<HHIQ", header, 0, 2, 0x0101, 64, len(payload))
    struct.pack_into("<I", header, 28, arch)
    return bytes(header) + payload


def _container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", pack_ort.FATBIN_MAGIC, 1, 16, len(body)) + body


def _elf(fatbin: bytes, text: bytes = b"\x90" * 40) -> tuple[bytearray, int]:
    """A 64-bit ELF image: header, .text, .shstrtab, .nv_fatbin, then the section headers."""
    names = b"\0.text\0.shstrtab\0.nv_fatbin\0"
    text_at = 64
    names_at = text_at + len(text)
    fat_at = (names_at + len(names) + 7) // 8 * 8
    shoff = (fat_at + len(fatbin) + 7) // 8 * 8
    image = bytearray(shoff + 4 * 64)
    image[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", image, 0x28, shoff)
    struct.pack_into("<HHH", image, 0x3A, 64, 4, 2)
    image[text_at:names_at] = text
    image[names_at : names_at + len(names)] = names
    image[fat_at : fat_at + len(fatbin)] = fatbin
    for i, (name, offset, size) in enumerate(
        [(1, text_at, len(text)), (7, names_at, len(names)), (17, fat_at, len(fatbin))], 1
    ):
        struct.pack_into("<IIQQQQ", image, shoff + i * 64, name, 1, 0, 0, offset, size)
    return image, fat_at


def test_only_the_kept_architecture_remains_and_containers_stay_where_they_were() -> None:
    first = _container(_entry(80, b"a" * 24), _entry(90, b"b" * 16), _entry(86, b"c" * 8), _entry(90, b"d" * 8))
    second = _container(_entry(120, b"e" * 8))  # no sm_90: the original could not run it there either
    fatbin = first + bytes(8) + second
    image, fat_at = _elf(fatbin)
    before = bytes(image)

    stats = pack_ort.prune_fatbin(image, 90)

    assert (stats["kept"], stats["dropped"], stats["untouched"], stats["containers"]) == (2, 2, 1, 2)
    assert len(image) == len(before)
    assert image[:fat_at] == before[:fat_at] and image[fat_at + len(fatbin) :] == before[fat_at + len(fatbin) :]
    kept = _entry(90, b"b" * 16) + _entry(90, b"d" * 8)
    assert struct.unpack_from("<Q", image, fat_at + 8)[0] == len(kept)
    assert image[fat_at + 16 : fat_at + 16 + len(kept)] == kept
    assert image[fat_at + 16 + len(kept) : fat_at + len(first)] == bytes(len(first) - 16 - len(kept))
    assert stats["bytes_freed"] == len(first) - 16 - len(kept)
    assert image[fat_at + len(first) : fat_at + len(fatbin)] == bytes(8) + second


def test_a_library_without_that_architecture_is_refused() -> None:
    image, _ = _elf(_container(_entry(80, b"a" * 8)))
    with pytest.raises(ValueError, match=r"no sm_90 code in this library"):
        pack_ort.prune_fatbin(image, 90)


def test_an_entry_that_overruns_its_container_is_refused_not_copied() -> None:
    broken = bytearray(_container(_entry(90, b"b" * 16)))
    struct.pack_into("<Q", broken, 16 + 8, 4096)  # the payload size claims more than the container holds
    image, _ = _elf(bytes(broken))
    with pytest.raises(ValueError, match=r"overruns its container"):
        pack_ort.prune_fatbin(image, 90)
