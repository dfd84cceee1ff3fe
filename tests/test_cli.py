"""The fastopt command itself (help, version, info) and what a new user meets when importing
a source folder that was not built."""
import os
import shutil

import pytest

import fastopt
from fastopt.cli import main


def test_no_subcommand_prints_the_help(capsys):
    assert main([]) == 0
    output = capsys.readouterr().out
    assert output.startswith("usage: fastopt")
    for subcommand in ("bench", "paths", "compare", "info"):
        assert subcommand in output


def test_python_dash_m_fastopt_with_no_arguments_prints_the_help(run_python):
    result = run_python("-m", "fastopt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fastopt") and result.stderr == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"fastopt {fastopt.__version__}\n"


def test_info_prints_every_build_info_key_aligned(capsys):
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    info = fastopt.build_info()
    assert [line.split(":")[0].strip() for line in lines] == list(info)
    assert len({line.index(":") for line in lines}) == 1  # one column of colons


def test_importing_an_unbuilt_source_folder_says_what_to_do(run_python, tmp_path):
    """`python -c "import fastopt"` in a source checkout that was not built in place imports
    that folder (the current folder comes first on sys.path): the error must say so."""
    package = os.path.dirname(os.path.abspath(fastopt.__file__))
    shutil.copytree(package, tmp_path / "fastopt",
                    ignore=shutil.ignore_patterns("_kernels.*", "__pycache__"))
    result = run_python("-c", "import fastopt")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: fastopt's compiled extension (fastopt._kernels) "
                                f"is not in {tmp_path / 'fastopt'}")
    assert "Run Python from another folder" in last_line
    assert "python setup.py build_ext --inplace" in last_line
    assert "partially initialized" not in last_line
