"""Pack onnxruntime-gpu small enough to carry to a GPU machine that has no network.

Usage:
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 -d /tmp/ortgpu onnxruntime-gpu==1.31.1
    python tools/pack_ort_gpu.py /tmp/ortgpu/onnxruntime_gpu-*.whl --sm 90 --out .gpu --part-mb 50

The wheel is 256 MB, most of it CUDA kernels for six GPU generations (sm_75 to
sm_120) inside ``libonnxruntime_providers_cuda.so``.  This keeps the kernels of
one generation (``--sm 90``: H100/H200) and writes zeros over the others, which
leaves the file's layout intact and lets xz squeeze them away; it also drops
what the Python runtime does not load (``libonnxruntime.so``, the TensorRT
provider, the transformers tools).  The result, an xz tarball of the
``onnxruntime`` package, is split into parts of at most ``--part-mb``: 60 MB in
two parts for 1.31.1.  On the GPU machine::

    mkdir -p /tmp/site && cat PART... | tar -xJ -C /tmp/site
    ORT_GPU_SITE=/tmp/site bash tools/gpu_check.sh

(The GPU machine's Python must already hold the CUDA and cuDNN libraries the
wheel was built for, as the nvidia-* pip packages; gpu_check.sh finds them.)
Used on 2026-11-27 with onnxruntime-gpu 1.31.1 (CUDA 13) on an H100.
"""

from __future__ import annotations

import argparse
import io
import lzma
import struct
import tarfile
import zipfile
from pathlib import Path

_FATBIN_MAGIC = 0xBA55ED50
_DROP = (
    "onnxruntime/capi/libonnxruntime.so",
    "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
    "onnxruntime/transformers/",
)


def _section(data: bytes, wanted: str) -> tuple[int, int]:
    """(offset, size) of an ELF64 section by name."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names + name)
        if data[names + name : end].decode() == wanted:
            return offset, size
    raise SystemExit(f"no {wanted} section")


def blank_other_archs(data: bytearray, sm: int) -> tuple[int, int]:
    """Zero every fatbin entry not built for ``sm``; return (bytes kept, bytes zeroed)."""
    start, size = _section(bytes(data), ".nv_fatbin")
    pos, kept, zeroed = start, 0, 0
    while pos < start + size:
        magic, _version, header, body = struct.unpack_from("<IHHQ", data, pos)
        if magic != _FATBIN_MAGIC:
            pos += 8
            continue
        entry = pos + header
        while entry < pos + header + body:
            _kind, _unused, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            if arch == sm:
                kept += payload
            else:
                data[entry + entry_header : entry + entry_header + payload] = bytes(payload)
                zeroed += payload
            entry += entry_header + payload
        pos += header + body
    return kept, zeroed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--sm", type=int, default=90, help="GPU generation to keep (90: Hopper)")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--part-mb", type=int, default=50)
    args = parser.parse_args()
    buffer = io.BytesIO()
    with zipfile.ZipFile(args.wheel) as wheel, tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in wheel.infolist():
            if info.is_dir() or info.filename.startswith(_DROP):
                continue
            data = bytearray(wheel.read(info))
            if info.filename.endswith("libonnxruntime_providers_cuda.so"):
                kept, zeroed = blank_other_archs(data, args.sm)
                print(
                    f"{info.filename}: kept {kept / 1e6:.0f} MB of sm_{args.sm} kernels, zeroed {zeroed / 1e6:.0f} MB"
                )
            member = tarfile.TarInfo(info.filename)
            member.size = len(data)
            member.mode = 0o755 if info.filename.endswith(".so") else 0o644
            tar.addfile(member, io.BytesIO(bytes(data)))
    packed = lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    args.out.mkdir(parents=True, exist_ok=True)
    step = args.part_mb * 1_000_000
    for number, start in enumerate(range(0, len(packed), step)):
        part = args.out / f"part{number}" / f"ort.tar.xz.{number:02d}"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(packed[start : start + step])
        print(f"wrote {part} ({len(packed[start : start + step]) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
