#!/usr/bin/env python3
"""Does an sdist hold every file the build and the package need?

Usage: check_sdist.py SDIST SOURCE_TREE

Needed: every file under csrc/ (setup.py compiles some of them by path, so setuptools does not
find them on its own), the package's .py and .pyx files, setup.py, pyproject.toml, README.md
and LICENSE, as far as they exist in SOURCE_TREE. Missing tests/ is reported, not an error.
Exit status 0 when complete, 1 otherwise.
"""
import pathlib
import sys
import tarfile


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sdist, source = argv[0], pathlib.Path(argv[1])
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}

    def present(pattern):
        return sorted(str(path.relative_to(source)) for path in source.glob(pattern)
                      if path.is_file() and "__pycache__" not in path.parts)

    needed = present("csrc/*") + present("fastopt/**/*.py") + present("fastopt/**/*.pyx")
    needed += [name for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE")
               if (source / name).exists()]
    needed = [name for name in needed if not name.endswith("_build_config.py")]  # build output
    missing = [name for name in needed if name not in names]
    tests = present("tests/*.py")
    tests_missing = [name for name in tests if name not in names]

    if missing:
        print("FAIL: the sdist lacks files the build or the package needs "
              "(a MANIFEST.in line such as 'graft csrc' adds them):")
        for name in missing:
            print(f"  {name}")
        return 1
    print(f"sdist complete: {len(needed)} source files; tests "
          + (f"not included ({len(tests_missing)} files)" if tests_missing else "included"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
