"""The installed product owns one namespace: a real wheel holds adderconv/ and nothing generic beside it."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(ROOT), "-w", str(out)], check=True)
    (whl,) = out.glob("adderconv-*.whl")
    return whl


def test_wheel_has_a_single_top_level_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"adderconv", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for expected in ("adderconv/cli.py", "adderconv/analysis/__init__.py", "adderconv/converters/__init__.py",
                     "adderconv/ops.py"):
        assert expected in names


@pytest.mark.slow
def test_clean_wheel_install_imports_every_subpackage(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") \
        == ["adderconv"]
    code = (
        "import sys, importlib.util as u; sys.path.insert(0, sys.argv[1]);"
        "import adderconv, adderconv.analysis, adderconv.converters, adderconv.cli;"
        "assert adderconv.__file__.startswith(sys.argv[1]), adderconv.__file__;"
        "assert adderconv.analysis.__file__.startswith(sys.argv[1]);"
        "assert all(u.find_spec(m) is None for m in ('analysis', 'converters', 'cli')), 'generic top-level module'"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=tmp_path, env=env)


def test_editable_checkout_imports_the_same_names():
    import adderconv
    import adderconv.analysis
    import adderconv.cli
    import adderconv.converters

    assert adderconv.cli.app is not None


def test_python_m_and_console_script_report_the_version():
    out = subprocess.run([sys.executable, "-m", "adderconv", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("adderconv ")


def test_a_checkout_imports_one_way():
    """From the checkout root (on sys.path), analysis/converters/cli refuse to become second copies, and nothing
    else at the top level (tests, the build hook) is reachable as adderconv.*."""
    for stmt, expected in (("import analysis", "import adderconv.analysis"),
                           ("import converters", "import adderconv.converters"),
                           ("import cli", "import adderconv.cli"),
                           ("import adderconv.tests", "No module named 'adderconv.tests'"),
                           ("import adderconv.hatch_build", "No module named 'adderconv.hatch_build'")):
        out = subprocess.run([sys.executable, "-c", stmt], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode != 0 and expected in out.stderr, (stmt, out.stderr[-300:])
    out = subprocess.run([sys.executable, "-c", "import adderconv.analysis as a, adderconv.converters, adderconv.cli;"
                          "print(a.__name__)"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "adderconv.analysis"
