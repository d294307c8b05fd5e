"""Every MODEL form loads, what a file says never runs code, and every saved model reloads.

The security cases use a module that leaves a marker file when imported: it must never appear unless the
user named the module themselves (``--arch``) or trusted the file.
"""
import json

import pytest
import torch
from safetensors.torch import safe_open, save_file

import adderconv
from adderconv import AdderconvError
from adderconv.adaptive_lr import adaptive_scale
from adderconv.arch import ArchSpec

EVIL = '''
import pathlib
pathlib.Path({marker!r}).write_text("ran")
def build():
    pathlib.Path({marker!r}).write_text("called")
    import torch
    return torch.nn.Linear(1, 1)
'''


@pytest.fixture()
def evil(tmp_path, monkeypatch):
    """A module `evilmod` importable from the working directory (as `python -m adderconv` makes it)."""
    marker = tmp_path / "MARKER"
    (tmp_path / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def _weights_file(path, arch=None, kwargs=None, model=None):
    model = model or adderconv.get_model("lenet5_bn")
    meta = {"format": "pt"}
    if arch:
        meta["adderconv.arch"] = arch
    if kwargs is not None:
        meta["adderconv.arch_kwargs"] = json.dumps(kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("arch", ["evilmod:build", "os:abort", "subprocess:getoutput", "evilmod.sub:x"])
def test_file_metadata_naming_code_is_refused(tmp_path, evil, arch):
    path = _weights_file(tmp_path / "m.safetensors", arch)
    with pytest.raises(AdderconvError, match="neither a zoo model nor an allow-listed builder.*`arch`"):
        adderconv.load_model(path)
    assert not evil.exists()


@pytest.mark.parametrize("command", [["energy"], ["convert", "-o", "out.safetensors"], ["export", "-o", "o.onnx"],
                                     ["finetune", "--epochs", "1", "--limit", "32", "-o", "run"]])
def test_every_command_refuses_code_named_by_a_file(tmp_path, evil, run_cli, command):
    path = _weights_file(tmp_path / "m.safetensors", "evilmod:build")
    code, out, err = run_cli(command[0], path, *command[1:], "-s", "1,1,32,32")
    assert code == 2 and "allow-listed" in err and len(err.strip().splitlines()) == 1, err
    assert not evil.exists()
    assert not any(p.name in ("out.safetensors", "o.onnx") for p in tmp_path.iterdir())


def test_the_users_own_arch_or_trust_overrides_the_file(tmp_path, evil):
    path = _weights_file(tmp_path / "m.safetensors", "evilmod:build")
    net = adderconv.load_model(path, arch="lenet5_bn")               # the user's choice wins
    assert not evil.exists() and net[-1].out_features == 10


def test_allow_listed_builders_load_from_file_metadata(tmp_path):
    import torchvision

    src = torchvision.models.resnet18(num_classes=3)
    for arch in ("torchvision:resnet18", "torchvision.models:resnet18"):
        path = _weights_file(tmp_path / "r.safetensors", arch, {"num_classes": 3}, model=src)
        net = adderconv.load_model(path)
        assert net.fc.out_features == 3
        torch.testing.assert_close(net.fc.weight, src.fc.weight)


def test_file_metadata_cannot_ask_a_builder_to_fetch_weights(tmp_path):
    path = _weights_file(tmp_path / "r.safetensors", "torchvision:resnet18", {"weights": "IMAGENET1K_V1"})
    with pytest.raises(AdderconvError, match="beyond the allowed"):
        adderconv.load_model(path)
    bad = _weights_file(tmp_path / "b.safetensors", "torchvision:resnet18", {"num_classes": {"__class__": 1}})
    with pytest.raises(AdderconvError, match="plain values"):
        adderconv.load_model(bad)


def test_architecture_specs_as_model(tmp_path, run_cli):
    out = tmp_path / "r18.safetensors"
    code, stdout, err = run_cli("convert", "torchvision:resnet18", "-s", "1,3,32,32", "-o", out)
    assert code == 0, err
    assert "random initialisation" in stdout
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["adderconv.arch"] == "torchvision:resnet18"
    net = adderconv.load_model(out)                                   # allow-listed: no --arch needed
    assert any(isinstance(m, adderconv.AdderConv2d) for m in net.modules())
    code, stdout, err = run_cli("energy", "torchvision.models:resnet18", "-s", "1,3,64,64",
                                "--json", tmp_path / "e.json")
    assert code == 0 and "Totals" in stdout, err
    assert "built with random initialisation" in " ".join(stdout.split())      # the report says so
    assert any("random initialisation" in n for n in json.loads((tmp_path / "e.json").read_text())["source_notes"])
    for spec, msg in (("torchvision:no_such_net", "no such torchvision model"),
                      ("no_such_module_xyz:f", "cannot import architecture")):
        code, _, err = run_cli("energy", spec, "-s", "1,3,32,32")
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err


def test_user_factories_that_fail_are_one_line(tmp_path, monkeypatch, run_cli):
    (tmp_path / "userarch.py").write_text("def needs(x):\n    return x\n\ndef boom():\n    raise RuntimeError('boom')\n"
                                          "\ndef notamodel():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    state = tmp_path / "w.pt"
    torch.save(adderconv.get_model("lenet5_bn").state_dict(), state)
    for factory, msg in (("userarch:needs", "could not be built"), ("userarch:boom", "boom"),
                         ("userarch:notamodel", "not an nn.Module"), ("userarch:missing", "cannot import")):
        code, _, err = run_cli("convert", state, "--arch", factory, "-o", tmp_path / "o.safetensors")
        assert code == 2 and msg in err and "Traceback" not in err, (factory, err)
    assert not (tmp_path / "o.safetensors").exists()


def test_weights_of_the_wrong_shape_name_the_tensors(tmp_path, run_cli):
    import torchvision

    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    code, _, err = run_cli("convert", path, "--arch", "torchvision.models:resnet18", "-o", tmp_path / "o.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "fc.weight (10, 512) (architecture: (1000, 512))" in err and "fc.bias (10,)" in err


def test_integer_weights_are_not_cast_silently(tmp_path):
    state = adderconv.get_model("lenet5_bn").state_dict()
    state["0.weight"] = state["0.weight"].to(torch.int32)
    path = tmp_path / "i.safetensors"
    save_file(state, str(path), metadata={"adderconv.arch": "lenet5_bn"})
    with pytest.raises(AdderconvError, match=r"0\.weight torch\.int32 \(architecture: torch\.float32\)"):
        adderconv.load_model(path)


def test_damaged_torch_files_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(AdderconvError, match="empty"):
        adderconv.load_model(empty, arch="lenet5_bn")
    gen = torch.Generator().manual_seed(0)
    for i in range(60):                     # random bytes hit every branch of torch.load's legacy unpickler
        n = int(torch.randint(1, 200, (1,), generator=gen))
        f = tmp_path / f"r{i}.pt"
        f.write_bytes(bytes(torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).tolist()))
        for trust in (False, True):
            with pytest.raises(AdderconvError):
                adderconv.load_model(f, arch="lenet5_bn", trust=trust)


def test_arch_spec_records_round_trip():
    spec = ArchSpec.parse("lenet5_bn", {"num_classes": 2})
    again = ArchSpec.from_metadata(spec.to_metadata())
    assert again == spec and again.build()[-1].out_features == 2
    assert ArchSpec.from_metadata({}) is None
    with pytest.raises(AdderconvError, match="JSON object"):
        ArchSpec.from_metadata({"adderconv.arch": "lenet5_bn", "adderconv.arch_kwargs": "[1]"})


def test_adaptive_scale_norm_in_the_gradients_precision():
    g = torch.randn(64, 576, dtype=torch.float64) * 1e-3
    exact = 0.2 * (g.numel() ** 0.5) * g / torch.linalg.vector_norm(g)
    torch.testing.assert_close(adaptive_scale(g, 0.2), exact, rtol=1e-13, atol=0)   # a float32 norm: ~1e-7
    h = torch.full((1 << 16,), 300.0, dtype=torch.float16)       # its sum of squares overflows float16
    assert torch.isfinite(adaptive_scale(h, 0.2)).all()


def test_convert_says_which_option_would_convert_the_kept_energy(tmp_path, monkeypatch, run_cli):
    (tmp_path / "linear_heavy.py").write_text(
        "import torch\n"
        "def net():\n"
        "    nn = torch.nn\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(),\n"
        "                         nn.Linear(8 * 10 * 10, 512), nn.Linear(512, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli("convert", "linear_heavy:net", "-s", "1,3,16,16", "-o", tmp_path / "o.safetensors")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "kept layers hold" in flat and "2 Linear (convert_linear=True (--linear))" in flat, flat
    code, out, _ = run_cli("convert", "linear_heavy:net", "-s", "1,3,16,16", "--linear",
                           "-o", tmp_path / "p.safetensors")
    assert code == 0 and "kept layers hold" not in out
