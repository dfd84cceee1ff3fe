#!/usr/bin/env python3
"""Check that a built x86-64 ELF extension keeps its AVX code inside the SIMD units.

fastopt's wheels promise only the platform's baseline instruction set (x86-64: SSE2). AVX2 and
AVX-512 code may exist only in the units setup.py compiles with target flags (loops_avx2.c,
loops_avx512.c), which the engine calls only after CPUID said the CPU has them. This script
disassembles the shared object and attributes every function to the source file it came from
(the linker groups each object's local symbols after an STT_FILE symbol), then fails if:

  * a function outside the SIMD units contains a VEX- or EVEX-encoded instruction (AVX, AVX2,
    AVX-512, FMA, BMI1/2) or POPCNT/LZCNT, i.e. anything beyond the x86-64 baseline;
  * code that no symbol covers contains such an instruction;
  * the avx2 unit uses AVX-512 registers (zmm, opmask);
  * any unit contains a fused multiply-add (results would differ from NumPy's);
  * the object has IFUNC symbols or IRELATIVE relocations (musl has no ifunc; we dispatch with
    CPUID and function-pointer tables);
  * a SIMD unit the build claims to contain has no vector code (the check would be vacuous).

Usage: check_simd_isolation.py SHARED_OBJECT [--units avx2,avx512]
Needs binutils (readelf, objdump). Exit status 0 when clean, 1 on a violation, 2 on misuse.
"""
import argparse
import bisect
import re
import shutil
import subprocess
import sys

SIMD_UNIT_FILES = {"avx2": "loops_avx2.c", "avx512": "loops_avx512.c"}
# VEX-encoded general-purpose instructions (BMI1/BMI2): not AVX by name, not baseline either.
VEX_SCALAR = {"andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext",
              "rorx", "sarx", "shlx", "shrx"}
# Baseline CPUs fault on POPCNT, or run LZCNT as BSR (different result).
NOT_BASELINE = {"popcnt", "lzcnt"}
FMA = re.compile(r"^v?f(n)?m(add|sub|addsub|subadd)")
AVX512_REGISTER = re.compile(r"%zmm|%k[0-7]\b")
INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(?:(?:lock|rep[a-z]*|notrack|bnd|data16|addr32|"
                         r"cs|ds|es|fs|gs|ss)\s+)*([a-z][a-z0-9.]*)\s*(.*)$")


def run(command):
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def function_ranges(path):
    """[(start, end, name, source file or '' for globals)] sorted by start."""
    ranges, current_file = [], ""
    for line in run(["readelf", "-sW", path]).splitlines():
        fields = line.split()
        if len(fields) < 7 or not fields[0].endswith(":"):
            continue
        value, size, kind, bind = fields[1], fields[2], fields[3], fields[4]
        name = fields[7] if len(fields) > 7 else ""
        if kind == "FILE":
            current_file = name
            continue
        if kind not in ("FUNC", "IFUNC"):
            continue
        try:
            start, length = int(value, 16), int(size, 0)
        except ValueError:
            continue
        if start == 0 or length == 0:
            continue
        # Hidden globals become locals after the last (nameless) FILE symbol: no unit to name.
        source = current_file if bind == "LOCAL" else ""
        ranges.append((start, start + length, name, source))
    ranges.sort()
    return ranges


def is_avx_encoded(mnemonic, operands):
    if mnemonic.startswith("v") and mnemonic not in ("verr", "verw"):
        return True
    return mnemonic in VEX_SCALAR or "%ymm" in operands or bool(AVX512_REGISTER.search(operands))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shared_object")
    parser.add_argument("--units", default="avx2,avx512",
                        help="SIMD units the build contains (comma-separated; default: %(default)s)")
    args = parser.parse_args(argv)
    for tool in ("readelf", "objdump"):
        if shutil.which(tool) is None:
            print(f"check_simd_isolation: {tool} not found (install binutils)", file=sys.stderr)
            return 2
    units = [u for u in (x.strip() for x in args.units.split(",")) if u]
    for unit in units:
        if unit not in SIMD_UNIT_FILES:
            print(f"check_simd_isolation: unknown unit {unit!r}", file=sys.stderr)
            return 2
    simd_files = {SIMD_UNIT_FILES[u]: u for u in units}

    problems = []
    symbols = run(["readelf", "-sW", args.shared_object])
    if re.search(r"\sIFUNC\s", symbols):
        problems.append("IFUNC symbols present (musl has no ifunc; dispatch must use CPUID)")
    if "IRELATIV" in run(["readelf", "-rW", args.shared_object]):
        problems.append("IRELATIVE relocations present (ifunc resolution)")

    ranges = function_ranges(args.shared_object)
    files = {source for _, _, _, source in ranges if source}
    if "loops_baseline.c" not in files:
        print("check_simd_isolation: no local symbols of loops_baseline.c; the object is stripped, "
              "so functions cannot be attributed to units", file=sys.stderr)
        return 2
    starts = [r[0] for r in ranges]

    per_file = {}           # source -> [functions, avx instructions, avx-512 instructions]
    offenders = {}          # (function, source) -> first offending instruction
    unattributed = []
    fma = []
    for line in run(["objdump", "-d", "-w", "--no-show-raw-insn", args.shared_object]).splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        address, mnemonic, operands = int(match.group(1), 16), match.group(2), match.group(3)
        index = bisect.bisect_right(starts, address) - 1
        function = ranges[index] if index >= 0 and address < ranges[index][1] else None
        source = function[3] if function else None
        avx = is_avx_encoded(mnemonic, operands)
        if FMA.match(mnemonic):
            fma.append(f"{mnemonic} at {address:#x} in {function[2] if function else '?'}")
        counts = per_file.setdefault(source or "(global or unattributed)", [set(), 0, 0])
        if function:
            counts[0].add(function[2])
        if avx:
            counts[1] += 1
            if AVX512_REGISTER.search(operands):
                counts[2] += 1
        if not (avx or mnemonic in NOT_BASELINE):
            continue
        if function is None:
            unattributed.append(f"{mnemonic} {operands} at {address:#x}")
        elif source not in simd_files:
            offenders.setdefault((function[2], source or "global symbol"),
                                 f"{mnemonic} {operands}".strip())
        elif simd_files[source] == "avx2" and AVX512_REGISTER.search(operands):
            offenders.setdefault((function[2], source), f"AVX-512 in the avx2 unit: {mnemonic} "
                                 f"{operands}".strip())

    for (name, source), instruction in sorted(offenders.items())[:20]:
        problems.append(f"{name} ({source}): {instruction}")
    if len(offenders) > 20:
        problems.append(f"... and {len(offenders) - 20} more functions")
    problems += [f"uncovered code: {u}" for u in unattributed[:10]]
    problems += [f"fused multiply-add: {f}" for f in fma[:10]]
    for source, unit in simd_files.items():
        _, avx, avx512 = per_file.get(source, [set(), 0, 0])
        if avx == 0 or (unit == "avx512" and avx512 == 0):
            problems.append(f"unit {unit} ({source}) has no {unit} vector code: vacuous check")

    print(f"check_simd_isolation: {args.shared_object}")
    for source in sorted(per_file, key=str):
        functions, avx, avx512 = per_file[source]
        print(f"  {source:32s} {len(functions):4d} functions {avx:6d} AVX-encoded "
              f"({avx512} AVX-512)")
    if problems:
        print("FAIL: instructions beyond the baseline outside the SIMD units, or dispatch by ifunc:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print("OK: AVX/AVX-512 only in " + (", ".join(sorted(simd_files)) or "no unit")
          + "; no FMA; no IFUNC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
