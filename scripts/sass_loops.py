#!/usr/bin/env python3
"""The main loop of each kernel, counted in SASS: what a GPU issues per iteration.

    scripts/sass_loops.py [--arch 90] [--filter REGEX] [--memory] FILE.cu | FILE.cubin | FILE.sass

A .cu file is compiled here (nvcc -O3 -arch=sm_ARCH -cubin, from the repository root, with
ptxas's register and spill report), a .cubin disassembled (cuobjdump -sass), a .sass listing
read as it is. Per kernel: the loop (a backward branch and its body) holding the most tensor-
core instructions (Hopper's HGMMA, else HMMA; FFMA for a kernel without any; --arch 90a for
the wgmma kernels), its instructions per iteration (NOPs left out) by opcode, the
subroutines it calls (nvcc's 64-bit divisions, say) with their lengths, which a run issues
once per call, and the kernel's registers and spills; then each loop nested in it,
whose instructions the count above holds once but a run issues once per trip (a copy loop
over a tile's rows, say). Static counts: a branch inside the loop that a run never takes
still counts, an inner loop's trip count is not known here, and nothing is a timing.

--memory, for memory-bound kernels: every loop that reads or writes global memory (LDG,
STG), each with its instructions per iteration, its accesses by width (LDG.E.128 moves 16
bytes a thread, LDG.E 4, LDG.E.U16 2) and the instructions it issues per 16 bytes moved.
A loop nested in another is listed on its own and also counted in the outer one.

Why: a sub-partition of an SM issues one instruction a cycle and keeps its tensor core busy
a few cycles per mma, so a K loop whose other instructions (address arithmetic, bounds tests,
branches) outnumber that budget waits on issue (docs/kernels.md, convolution v4, step 5).
Needs no GPU. cuobjdump comes with the CUDA toolkit (or: pip install nvidia-cuda-cuobjdump).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(name):
    found = shutil.which(name) or next(
        (p for p in (f"/usr/local/cuda/bin/{name}",) if os.path.exists(p)), None)
    if not found:
        sys.exit(f"sass_loops: {name} not found (the CUDA toolkit has it; for cuobjdump also "
                 "pip install nvidia-cuda-cuobjdump)")
    return found


def ptxas_report(text):
    """{mangled kernel: (registers, spill stores, spill loads)} from ptxas -v."""
    out, kernel, spills = {}, None, ("0", "0")
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            kernel, spills = m.group(1), ("0", "0")
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            spills = m.groups()
        m = re.search(r"Used (\d+) registers", line)
        if m and kernel:
            out[kernel] = (int(m.group(1)), int(spills[0]), int(spills[1]))
    return out


def functions(sass):
    """(mangled name, [(address, instruction)]) per function of a cuobjdump -sass listing."""
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        name = part.split("\n", 1)[0].strip()
        code = []
        for line in part.splitlines():
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
            if m:
                code.append((int(m.group(1), 16), m.group(2)))
        yield name, code


def opcode(instruction):
    return opcode_parts(instruction)[0]


def main_loop(code):
    """(key opcode, first, last index) of the loop with the most key instructions, or None."""
    ops = [opcode(i) for _, i in code]
    key = next((k for k in ("HGMMA", "HMMA") if k in ops), "FFMA")
    at = {address: n for n, (address, _) in enumerate(code)}
    best = None
    for n, (address, instruction) in enumerate(code):
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", instruction)
        if not m or int(m.group(1), 16) > address or int(m.group(1), 16) not in at:
            continue
        first = at[int(m.group(1), 16)]
        count = ops[first:n + 1].count(key)
        # the most key instructions; among equals the shortest loop (the innermost)
        if count and (best is None or (count, first - n) > (best[0], best[1] - best[2])):
            best = (count, first, n)
    return (key, best[1], best[2]) if best else None


def inner_loops(code, first, last):
    """(first, last index) of each loop nested in code[first:last + 1], outermost first."""
    at = {address: n for n, (address, _) in enumerate(code)}
    loops = []
    for n in range(first, last):
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", code[n][1])
        target = int(m.group(1), 16) if m else None
        if target is not None and target <= code[n][0] and at.get(target, -1) >= first:
            loops.append((at[target], n))
    return sorted(loops, key=lambda loop: (loop[0], -loop[1]))


def loop_calls(code, first, last):
    """Sizes (instructions to the RET, NOPs left out) of the subroutines the loop
    code[first:last + 1] calls, one entry per call: what a run issues beside the loop's own
    instructions (nvcc's 64-bit division is such a subroutine). A call to just past the loop
    is how the compiler leaves it, not a subroutine."""
    at = {address: n for n, (address, _) in enumerate(code)}
    leave = code[last + 1][0] if last + 1 < len(code) else None
    sizes = []
    for _, instruction in code[first:last + 1]:
        m = re.search(r"\bCALL\.REL\S*\s+0x([0-9a-f]+)", instruction)
        if not m or int(m.group(1), 16) not in at:
            continue
        target = int(m.group(1), 16)
        if code[first][0] <= target <= code[last][0] or target == leave:
            continue
        size = 0
        for _, i in code[at[target]:]:
            size += opcode(i) != "NOP"
            if opcode(i) == "RET":
                break
        sizes.append(size)
    return sizes


def access_bytes(instruction):
    """Bytes one thread moves with a global load or store (LDG / STG), by its width suffix."""
    parts = opcode_parts(instruction)
    for suffix, size in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if suffix in parts[1:]:
            return size
    return 4


def opcode_parts(instruction):
    words = instruction.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")


def memory_loops(code):
    """(first, last index) of each loop (a backward branch and its body) that holds a global
    load or store, in address order."""
    at = {address: n for n, (address, _) in enumerate(code)}
    loops = []
    for n, (address, instruction) in enumerate(code):
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", instruction)
        if not m or int(m.group(1), 16) > address or int(m.group(1), 16) not in at:
            continue
        first = at[int(m.group(1), 16)]
        if any(opcode(i) in ("LDG", "STG") for _, i in code[first:n + 1]):
            loops.append((first, n))
    return sorted(loops)


def memory_report(sass, registers):
    rows = []
    for name, code in functions(sass):
        loops = []
        for first, last in memory_loops(code):
            body = [i for _, i in code[first:last + 1] if opcode(i) != "NOP"]
            widths = collections.Counter(
                (opcode(i), access_bytes(i)) for i in body if opcode(i) in ("LDG", "STG"))
            moved = sum(size * n for (_, size), n in widths.items())
            loops.append((code[first][0], len(body), widths, moved))
        if loops:
            rows.append((demangle(name), registers.get(name), loops))
    for kernel, regs, loops in rows:
        where = f"{regs[0]} registers, spills {regs[1]}/{regs[2]} bytes" if regs else "registers: -"
        print(f"{kernel}\n    {where}")
        for address, size, widths, moved in loops:
            accesses = ", ".join(f"{n} {op} x {width} B"
                                 for (op, width), n in sorted(widths.items()))
            print(f"    loop at 0x{address:04x}: {size} instructions, {accesses}: {moved} B a "
                  f"thread, {16 * size / moved:.1f} instructions per 16 B")
    return rows


def demangle(name):
    try:
        text = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip()
    except OSError:
        return name
    text = re.sub(r"ddpm::cuda::(\(anonymous namespace\)::)?", "", text)
    return re.sub(r"\((long|int|float|unsigned|ddpm|const).*$", "", text)


def report(sass, registers):
    rows = []
    for name, code in functions(sass):
        loop = main_loop(code)
        if not loop:
            continue
        key, first, last = loop
        ops = collections.Counter(opcode(i) for _, i in code[first:last + 1])
        ops.pop("NOP", None)
        regs = registers.get(name)
        inner = []
        for a, b in inner_loops(code, first, last):
            body = collections.Counter(opcode(i) for _, i in code[a:b + 1])
            body.pop("NOP", None)
            inner.append((sum(body.values()), body))
        calls = loop_calls(code, first, last)
        rows.append((demangle(name), sum(ops.values()), ops[key], key, regs, ops, inner, calls))
    for kernel, total, keys, key, regs, ops, inner, calls in rows:
        where = f"{regs[0]} registers, spills {regs[1]}/{regs[2]} bytes" if regs else "registers: -"
        common = ", ".join(f"{op} {n}" for op, n in ops.most_common(8))
        print(f"{kernel}\n    loop: {total} instructions, {keys} {key}, {total - keys} other; "
              f"{where}\n    {common}")
        if calls:
            print(f"    calls: {len(calls)} a trip, to subroutines of "
                  f"{', '.join(str(n) for n in sorted(set(calls)))} instructions: "
                  f"{total + sum(calls)} instructions a trip with them")
        for size, body in inner:
            common = ", ".join(f"{op} {n}" for op, n in body.most_common(4))
            print(f"    inner loop: {size} instructions, counted once above but run once per "
                  f"trip ({common})")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--arch", default="90")
    ap.add_argument("--filter", default="", help="only kernels whose mangled name matches")
    ap.add_argument("--memory", action="store_true",
                    help="every loop with global loads or stores, by access width")
    args = ap.parse_args()
    registers, sass = {}, None
    if args.file.endswith(".sass"):
        sass = open(args.file).read()
    else:
        cubin = args.file
        with tempfile.TemporaryDirectory() as tmp:
            if args.file.endswith(".cu"):
                cubin = os.path.join(tmp, "kernels.cubin")
                built = subprocess.run(
                    [tool("nvcc"), "-std=c++17", "-O3", f"-arch=sm_{args.arch}", "-I", ROOT,
                     "-cubin", "-Xptxas", "-v", "-o", cubin, args.file],
                    capture_output=True, text=True)
                if built.returncode != 0:
                    sys.exit(built.stderr)
                registers = ptxas_report(built.stderr)
            sass = subprocess.run([tool("cuobjdump"), "-sass", cubin], capture_output=True,
                                  text=True, check=True).stdout
    if args.filter:
        keep = re.compile(args.filter)
        sass = "\n".join(["", *(f"\tFunction : {part}" for part in re.split(
            r"\n\s*Function : ", sass)[1:] if keep.search(part.split("\n", 1)[0]))])
    if args.memory:
        if not memory_report(sass, registers):
            sys.exit("sass_loops: no kernel with a loop of global loads or stores")
    elif not report(sass, registers):
        sys.exit("sass_loops: no kernel with a loop of HGMMA, HMMA or FFMA instructions")


if __name__ == "__main__":
    main()
