#!/usr/bin/env python3
"""Compares two same-sized 8-bit RGB(A) PNG screenshots channel by channel (alpha ignored):
the largest difference and the share of channel values within 0 and 2 levels.
Standard library only. Usage: loadtests/png-diff.py A.png B.png"""
import struct
import sys
import zlib


def load(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    i, idat = 8, b""
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, chunk = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), f"{path}: 8-bit RGB or RGBA only"
        if kind == b"IDAT":
            idat += chunk
        i += 12 + n
    raw, bpp = zlib.decompress(idat), {2: 3, 6: 4}[colour]
    stride, rows, prev, pos = width * bpp, [], bytearray(width * bpp), 0
    for _ in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return (width, height, bpp), rows


def main():
    (shape_a, a), (shape_b, b) = load(sys.argv[1]), load(sys.argv[2])
    assert shape_a == shape_b, f"different sizes: {shape_a} and {shape_b}"
    bpp = shape_a[2]
    counts, largest, total = [0] * 256, 0, 0
    for row_a, row_b in zip(a, b):
        for x in range(len(row_a)):
            if bpp == 4 and x % 4 == 3:
                continue
            d = abs(row_a[x] - row_b[x])
            counts[d] += 1
            largest = max(largest, d)
            total += 1
    print(f"largest channel difference: {largest} levels; equal: {counts[0] / total:.1%}; "
          f"within 2 levels: {sum(counts[:3]) / total:.1%}")


if __name__ == "__main__":
    main()
