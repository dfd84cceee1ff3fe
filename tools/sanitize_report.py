"""Read the sanitizer logs of a tools/sanitize.sh run and print its findings.

    python tools/sanitize_report.py LOGDIR

LOGDIR holds asan.PID and ubsan.PID, one per process that had something to say. A finding is any
ASan or UBSan error report, any failure of a sanitizer runtime itself, and any leak whose stack
has a frame in fastopt's compiled code (fastopt/_kernels, csrc/); LeakSanitizer's other leak
records belong to CPython, NumPy and the rest, and are counted but not shown. Exit status: 0 if
there is no finding, 3 if the findings are all leaks, 1 otherwise.
"""
import pathlib
import re
import sys

STACK_FRAMES = 15  # frames of each stack shown; the log files have them all
FASTOPT_FRAME = re.compile(r"[\s/(](fastopt/_kernels|csrc/)")
FRAME = re.compile(r"^\s*#\d+ ")
LEAK_RECORD = re.compile(r"^(Direct|Indirect) leak of ")


def cut_stacks(lines):
    """The lines, each stack cut to its first STACK_FRAMES frames."""
    out, depth, cut = [], 0, 0
    for line in lines:
        if FRAME.match(line):
            depth += 1
            if depth <= STACK_FRAMES:
                out.append(line)
            else:
                cut += 1
            continue
        if cut:
            out.append(f"    ... {cut} more frames")
        depth = cut = 0
        out.append(line)
    if cut:
        out.append(f"    ... {cut} more frames")
    return out


def split_leak_report(lines):
    """(lines before the first leak record, [leak records]) of a LeakSanitizer report."""
    head, records = [], []
    for line in lines:
        if LEAK_RECORD.match(line):
            records.append([line])
        elif line.startswith("SUMMARY: AddressSanitizer:") and "leaked" in line:
            break
        elif records:
            records[-1].append(line)
        else:
            head.append(line)
    return head, records


def tracer_crash(lines):
    """Is this log only LeakSanitizer's stop-the-world tracer crashing at exit (a known,
    intermittent fault of the runtime, google/sanitizers#1353), nothing found?"""
    meaningful = [line for line in lines if line.strip() and "HINT:" not in line]
    return bool(meaningful) and all(
        line.startswith("Tracer caught signal") or "LeakSanitizer has encountered a fatal error"
        in line for line in meaningful)


def findings(log):
    """(what is wrong in this log file as printable lines, only leaks?, leak records ignored)."""
    lines = log.read_text(errors="replace").splitlines()
    text = "\n".join(lines)
    if tracer_crash(lines):
        print(f"warning: {log}: LeakSanitizer crashed at exit (\"{lines[0]}\"; a known "
              f"intermittent fault of its tracer): that process's leaks were not checked")
        return [], False, 0
    if "ERROR: LeakSanitizer: detected memory leaks" not in text:
        return (cut_stacks(lines) if text.strip() else []), False, 0
    head, records = split_leak_report(lines)
    ours = [r for r in records if any(FASTOPT_FRAME.search(line) for line in r)]
    shown, leaks_only = [], True
    # Whatever came before the leak report (an error, a warning of the runtime) is shown too,
    # unless it is only the report's own banner.
    if any(line.strip() and not line.startswith("=") and "LeakSanitizer" not in line
           for line in head):
        shown += cut_stacks(head)
        leaks_only = False
    if ours:
        shown.append(f"LeakSanitizer: {len(ours)} leak record(s) with a frame in fastopt's code "
                     f"(found when the process exited):")
        for record in ours:
            shown += cut_stacks(record)
    return shown, leaks_only, len(records) - len(ours)


def main(argv):
    logdir = pathlib.Path(argv[1])
    logs = sorted(list(logdir.glob("asan.*")) + list(logdir.glob("ubsan.*")),
                  key=lambda p: p.stat().st_mtime)
    found, leaks_only, ignored = 0, True, 0
    for log in logs:
        shown, only_leaks, others = findings(log)
        ignored += others
        if shown:
            found += 1
            leaks_only = leaks_only and only_leaks
            print(f"---- {log} (each stack cut to its first {STACK_FRAMES} frames; "
                  f"the file has them all)")
            print("\n".join(shown))
    if ignored:
        print(f"(leaks not in fastopt's code, ignored: {ignored} record(s) in {len(logs)} "
              f"log file(s))")
    return 0 if not found else 3 if leaks_only else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
