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


def test_native_vs_portable_names_the_build_requirements_it_lacks(monkeypatch):
    """bench/native_vs_portable.py builds fastopt: without Cython it says what to install."""
    import importlib.metadata
    import importlib.util

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                          "native_vs_portable.py")
    if not os.path.exists(script):
        pytest.skip("needs the source tree's bench/")
    spec = importlib.util.spec_from_file_location("native_vs_portable", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real_version = importlib.metadata.version

    def version(package):
        if package == "Cython":
            raise importlib.metadata.PackageNotFoundError(package)
        return "76.0" if package == "setuptools" else real_version(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    message = module.missing_build_requirements()
    assert message.startswith("this script builds fastopt and needs: pip install "
                              "'Cython>=3' 'setuptools>=77'")
    assert 'pip install ".[bench]"' in message
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda package: {"Cython": "3.1.0", "setuptools": "80.1"}[package])
    assert "pip install" not in (module.missing_build_requirements() or "")
