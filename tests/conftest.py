"""Fixtures shared by the test modules."""
import os
import subprocess
import sys

import pytest

import fastopt


@pytest.fixture
def run_python(tmp_path):
    """Run `python ARGUMENTS` in a subprocess that imports the fastopt under test.

    The subprocess starts in an empty folder: `python -c` and `python -m` put the current folder
    first on sys.path, and from a source checkout that would import the uncompiled `fastopt/`
    instead of the installed package. EXTRA_ENV entries are added to the environment.
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))

    def run(*arguments, extra_env=None, check=False):
        environment = {**os.environ, **(extra_env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, *arguments], capture_output=True, text=True,
                              env=environment, cwd=tmp_path, timeout=120, check=check)

    return run


@pytest.fixture(params=fastopt.available_simd())
def simd(request):
    """Every SIMD path this build and CPU can run, in turn (restored afterwards)."""
    previous = fastopt.get_simd()
    fastopt.set_simd(request.param)
    yield request.param
    fastopt.set_simd(previous)
