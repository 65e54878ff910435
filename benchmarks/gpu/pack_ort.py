"""Pack onnxruntime-gpu for one GPU generation, small enough to reach the lent machine in one transfer.

    python benchmarks/gpu/pack_ort.py                       # 1.31.1, Python 3.12, sm_90 (H100/H200)
    python benchmarks/gpu/pack_ort.py --wheel FILE.whl --arch 90 --out .gpu-parts

The wheel is 255 MB, each device call carries at most 64 MiB, and the machine keeps /tmp only 30 s
between calls: five calls in a row just to install it, out of 15 minutes of device time. Almost all of
it is the CUDA provider's GPU code, compiled for six architectures (sm_75, 80, 86, 89, 90, 120), all
already zstd-compressed inside the library's `.nv_fatbin` section, so no archiver shrinks it. An H100 or
H200 only ever loads the sm_90 images: this keeps those and drops the rest, leaves out the C API's copy
of ONNX Runtime (Python never loads it), then xz-compresses the package and its dist-info. Result
(1.31.1): 58 MiB, one part, `.gpu-parts/ortx-part00`; `benchmarks/gpu/run.sh stage install` unpacks it.

How the pruning keeps the library valid: `.nv_fatbin` is a run of fatbin containers, each a 16-byte
header (magic 0xBA55ED50, version 1, header size 16, size of what follows) then entries, each an entry
header (its own size at byte 4, the 8-aligned payload size at byte 8, the SM architecture at byte 28)
followed by its payload. The CUDA runtime registers each container by its address, so containers stay
where they are: within each one the kept entries are moved up, the header's size is set to theirs, and
the bytes freed at its end are zeroed. A container with no entry for the architecture is left as it was
(the original library could not run those kernels on that GPU either). No ELF offset, symbol or
relocation changes. With cuobjdump on PATH (pip install nvidia-cuda-cuobjdump), the result is listed
to prove it parses and holds the kept images plus those of the containers left alone (1.31.1: nine
sm_120a-only kernels). `cuobjdump -xelf all` on the original and the packed library gave the same 600
sm_90 images, byte for byte.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
REPO = Path(__file__).resolve().parents[2]
PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
PART_BYTES = 60 * 2**20  # one part: with the repository (~2 MiB) under the device tool's 64 MiB per call


def section(data: bytes | bytearray, name: str) -> tuple[int, int]:
    """(file offset, size) of an ELF64 section, read from the section headers."""
    if data[:5] != b"\x7fELF\x02":
        raise ValueError("not a 64-bit ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    entsize, count, strndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * entsize) for i in range(count)]
    names = headers[strndx][4]
    for name_off, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names + name_off)
        if data[names + name_off : end].decode() == name:
            return offset, size
    raise ValueError(f"no {name} section")


def prune_fatbin(data: bytearray, arch: int) -> dict[str, int]:
    """Keep only `arch`'s entries in every fatbin container of `data` (an ELF image), in place."""
    start, size = section(data, ".nv_fatbin")
    end = start + size
    stats = {"containers": 0, "kept": 0, "dropped": 0, "untouched": 0, "untouched_images": 0, "bytes_freed": 0}
    pos = start
    while pos + 16 <= end:
        magic, version, header_size, body = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # containers start 8-aligned; padding between them is zeros
            continue
        if version != 1 or header_size != 16 or pos + 16 + body > end:
            raise ValueError(f"fatbin container at {pos:#x} has an unknown layout (version {version})")
        stats["containers"] += 1
        entries, cur, stop = [], pos + 16, pos + 16 + body
        while cur < stop:
            entry_size, payload = struct.unpack_from("<IQ", data, cur + 4)
            if entry_size < 64 or cur + entry_size + payload > stop:
                raise ValueError(f"fatbin entry at {cur:#x} overruns its container")
            entries.append((struct.unpack_from("<I", data, cur + 28)[0], bytes(data[cur : cur + entry_size + payload])))
            cur += entry_size + payload
        kept = [blob for sm, blob in entries if sm == arch]
        if not kept:
            stats["untouched"] += 1
            stats["untouched_images"] += len(entries)
            pos = stop
            continue
        packed = b"".join(kept)
        data[pos + 16 : stop] = packed + bytes(body - len(packed))
        struct.pack_into("<Q", data, pos + 8, len(packed))
        stats["kept"] += len(kept)
        stats["dropped"] += len(entries) - len(kept)
        stats["bytes_freed"] += body - len(packed)
        pos = stop
    if not stats["kept"]:
        raise ValueError(f"no sm_{arch} code in this library: it cannot run on that GPU")
    return stats


def _wheel_cuobjdump() -> str | None:
    """cuobjdump from the nvidia-cuda-cuobjdump wheel, which installs it off PATH (nvidia/cu13/bin)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    found = [
        tool
        for root in (spec.submodule_search_locations if spec else [])
        for tool in Path(root).glob("cu*/bin/cuobjdump")
    ]
    return str(sorted(found)[0]) if found else None


def check_with_cuobjdump(library: Path, arch: int, stats: dict[str, int]) -> str:
    """cuobjdump parses every container and lists the kept images, plus those of containers left as they were."""
    tool = shutil.which("cuobjdump") or _wheel_cuobjdump()
    if tool is None:
        return "cuobjdump not on PATH: listing not checked (pip install nvidia-cuda-cuobjdump)"
    listing = subprocess.run([tool, "-lelf", str(library)], capture_output=True, text=True, check=True).stdout
    archs = [line.rsplit(".", 2)[-2] for line in listing.splitlines() if line.startswith("ELF file")]
    ours = sum(a in (f"sm_{arch}", f"sm_{arch}a") for a in archs)
    if ours != stats["kept"] or len(archs) - ours != stats["untouched_images"]:
        raise ValueError(
            f"cuobjdump lists {ours} sm_{arch} and {len(archs) - ours} other images; expected {stats['kept']} and "
            f"{stats['untouched_images']}"
        )
    others = sorted(set(archs) - {f"sm_{arch}", f"sm_{arch}a"})
    return f"cuobjdump parses it: {ours} sm_{arch} images" + (
        f", and {len(archs) - ours} {'/'.join(others)}" if others else ""
    )


def download(version: str, python: str, folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", python, "--implementation", "cp"]
        + [f"--platform=manylinux_2_{n}_x86_64" for n in (28, 27, 17)]
        + ["-d", str(folder), f"onnxruntime-gpu=={version}"],
        check=True,
    )
    return next(folder.glob("onnxruntime_gpu-*.whl"))


def pack(wheel: Path, arch: int, out: Path) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="ort-pack-") as tmp:
        site = Path(tmp) / "site"
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)  # the package and its dist-info: what `pip install --target` would leave
        # The Python binding links ONNX Runtime statically (its only NEEDED libraries are the system's);
        # libonnxruntime.so is the C/C++ API's copy, never loaded from Python: 8 MB compressed that would
        # take a second transfer.
        for c_api in (site / "onnxruntime" / "capi").glob("libonnxruntime.so*"):
            c_api.unlink()
        library = site / PROVIDER
        data = bytearray(library.read_bytes())
        stats = prune_fatbin(data, arch)
        library.write_bytes(bytes(data))
        print(
            f"{PROVIDER}: kept {stats['kept']} sm_{arch} images, dropped {stats['dropped']}, {stats['bytes_freed'] / 1e6:.0f} "
            f"MB zeroed; {stats['untouched']} of {stats['containers']} containers had no sm_{arch} and were left as they were"
        )
        print(check_with_cuobjdump(library, arch, stats))
        archive = Path(tmp) / "ort.tar.xz"
        with tarfile.open(archive, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("ortx-part*"):
            old.unlink()
        parts = []
        with archive.open("rb") as src:
            while chunk := src.read(PART_BYTES):
                parts.append(out / f"ortx-part{len(parts):02d}")
                parts[-1].write_bytes(chunk)
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default="1.31.1", help="onnxruntime-gpu version (default 1.31.1, CUDA 13)")
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (default 3.12)")
    ap.add_argument("--arch", type=int, default=90, help="SM architecture to keep (default 90: H100, H200)")
    ap.add_argument("--wheel", type=Path, help="a downloaded wheel (default: pip download it)")
    ap.add_argument(
        "--out", type=Path, default=REPO / ".gpu-parts", help="where the parts go (default .gpu-parts, git-ignored)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ort-wheel-") as tmp:
        wheel = args.wheel or download(args.version, args.python, Path(tmp))
        parts = pack(wheel, args.arch, args.out)
    for part in parts:
        print(f"{part}  {part.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
