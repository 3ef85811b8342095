#!/usr/bin/env bash
# A real run's report page rendered by headless Chromium, offline: the screenshot must not be
# blank (enough pixels off the white background, in enough colours). Skips
# (exit 77) when Chromium or the system Python is not installed (Debian: apt install chromium).
#   tests/cli/report_render.sh DDPM CONFIG WORKDIR
set -u
ddpm=$1 config=$2 work=$3
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "SKIP: no chromium"; exit 77; }
[ -x /usr/bin/python3 ] || { echo "SKIP: no /usr/bin/python3 to read the screenshot"; exit 77; }
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; cat "$work"/*.log 2>/dev/null | tail -20; exit 1; }
"$ddpm" train --config "$config" --set out_dir="$work/run" --set steps=6 --set batch_size=4 \
  --set log_every=2 --set n_samples=4 --set sample_steps=2 --set eval_every=3 \
  --set eval_images=4 --set eval_timesteps=2 > "$work/train.log" 2>&1 || fail "training failed"
# no network: a page that tried to fetch something would render the same, but could not
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --proxy-server=127.0.0.1:9 --window-size=1280,1600 --screenshot="$work/shot.png" \
  "file://$work/run/report.html" > "$work/chromium.log" 2>&1 || fail "chromium failed"
[ -s "$work/shot.png" ] || fail "no screenshot"
/usr/bin/python3 - "$work/shot.png" <<'PY' || fail "the screenshot is blank"
# PNG decoded here (IHDR, IDAT, the five scanline filters of the specification), then:
# enough pixels that are not the white background, in enough distinct colours.
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
assert depth == 8 and colour in (2, 6), (depth, colour)
bpp = 3 if colour == 2 else 4
raw, stride = zlib.decompress(idat), width * bpp
prev, rows = bytearray(stride), []
for y in range(height):
    kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line))
    prev = line
pixels = [row[x * bpp:x * bpp + 3] for row in rows[::4] for x in range(0, width, 4)]
not_white = sum(1 for p in pixels if p != b"\xff\xff\xff") / len(pixels)
colours = len(set(pixels))
print(f"screenshot {width}x{height}: {not_white:.1%} of sampled pixels not white, {colours} colours")
assert not_white > 0.03 and colours > 16
PY
echo "PASS: the report renders offline and is not blank"
