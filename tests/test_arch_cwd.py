"""`--arch mypkg.models:build` from the folder that holds `mypkg/` works with the console script, as it does with
`python -m adderconv` (issue 27, item 3); a spec a *file* names still never imports from there."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SCRIPT = Path(sysconfig.get_path("scripts")) / "adderconv"
MODELS = """
from pathlib import Path
from torch import nn

Path("imported.marker").write_text("mypkg.models was imported")   # lets a test see that the module ran


def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(MODELS)
    state = {"0.weight": torch.randn(4, 3, 3, 3)}
    save_file(state, str(tmp_path / "net.safetensors"))
    save_file(state, str(tmp_path / "named.safetensors"), metadata={"adderconv.arch": "mypkg.models:build"})
    return tmp_path


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}     # nothing but the script's own path
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not SCRIPT.exists(), reason="the adderconv console script is not installed")
def test_console_script_imports_the_users_module_from_the_working_directory(project):
    run = _run(project, "energy", "net.safetensors", "--arch", "mypkg.models:build", "--input-shape", "1,3,8,8")
    assert run.returncode == 0, run.stderr
    assert (project / "imported.marker").exists()
    assert "0" in run.stdout and "Conv2d" in run.stdout                       # the user's conv was counted
    assert "No module named" not in run.stderr


@pytest.mark.skipif(not SCRIPT.exists(), reason="the adderconv console script is not installed")
def test_a_spec_the_file_names_never_imports_from_the_working_directory(project):
    refused = _run(project, "energy", "named.safetensors", "--input-shape", "1,3,8,8")
    assert refused.returncode != 0 and "neither a zoo model nor an allow-listed builder" in refused.stderr
    trusted = _run(project, "energy", "named.safetensors", "--input-shape", "1,3,8,8", "--trust")
    assert trusted.returncode != 0 and "No module named 'mypkg'" in trusted.stderr
    assert not (project / "imported.marker").exists()                        # mypkg.models never ran


def test_search_is_for_user_specs_only(project, monkeypatch):
    from adderconv.arch import ArchSpec

    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.abspath(p) != str(project)])
    spec = ArchSpec.from_metadata({"adderconv.arch": "mypkg.models:build"})
    assert spec.from_file and spec == ArchSpec.parse("mypkg.models:build")   # where it came from is no identity
    from adderconv.errors import AdderconvError

    with pytest.raises(AdderconvError, match="No module named 'mypkg'"):
        spec.build(trusted=True)
    assert ArchSpec.parse("mypkg.models:build").build()[0].out_channels == 4
    sys.modules.pop("mypkg.models", None)
    sys.modules.pop("mypkg", None)
