"""Writes the Python wheel of memtrim (scripts/package): packaging/python/memtrim with the built
program and library in it. A wheel is a zip with a manifest, so no build backend is needed.

usage: package_wheel.py DIST VERSION   (DIST holds memtrim and libmemtrim.so; the wheel goes there)"""
import base64
import hashlib
import os
import sys
import zipfile

TAG = "py3-none-manylinux_2_28_x86_64"


def main(dist, version):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packaging", "python", "memtrim")
    info = f"memtrim-{version}.dist-info"
    read = lambda p: open(p, "rb").read()
    files = [(f"memtrim/{n}", read(os.path.join(here, n)), 0o644) for n in ("__init__.py", "__main__.py")]
    files += [
        ("memtrim/bin/memtrim", read(os.path.join(dist, "memtrim")), 0o755),
        ("memtrim/lib/libmemtrim.so", read(os.path.join(dist, "libmemtrim.so")), 0o755),
        (f"{info}/METADATA", (
            "Metadata-Version: 2.1\nName: memtrim\nVersion: %s\n"
            "Summary: LD_PRELOAD allocator shim that counts live bytes and gives retained heap memory back\n"
            "License: MIT OR Apache-2.0\nRequires-Python: >=3.6\n" % version).encode(), 0o644),
        (f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: memtrim scripts/package\nRoot-Is-Purelib: false\nTag: {TAG}\n".encode(), 0o644),
        (f"{info}/entry_points.txt", b"[console_scripts]\nmemtrim = memtrim:main\n", 0o644),
    ]
    digest = lambda d: base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode()
    record = "".join(f"{n},sha256={digest(d)},{len(d)}\n" for n, d, _ in files) + f"{info}/RECORD,,\n"
    files.append((f"{info}/RECORD", record.encode(), 0o644))
    out = os.path.join(dist, f"memtrim-{version}-{TAG}.whl")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in files:
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o100000 | mode) << 16  # pip keeps the executable bit
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
