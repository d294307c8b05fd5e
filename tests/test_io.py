"""Safe loading: tensors-only files load; pickles, TorchScript and .pt2 need explicit trust."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from adderconv import AdderconvError, get_model, load_model
from adderconv.io import atomic_write, write_json


def _same(a, b):
    x = torch.randn(2, 3, 32, 32)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))


def test_zoo_name_and_state_dict_and_safetensors(tmp_path):
    model = get_model("resnet20_adder")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    _same(model, load_model(tmp_path / "w.pt", arch="resnet20_adder"))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"), metadata={"adderconv.arch": "resnet20_adder"})
    _same(model, load_model(tmp_path / "w.safetensors"))
    assert isinstance(load_model("resnet20"), torch.nn.Module)


def test_state_dict_without_arch_or_with_wrong_arch(tmp_path):
    torch.save(get_model("resnet20").state_dict(), tmp_path / "w.pt")
    with pytest.raises(AdderconvError, match="`arch`"):
        load_model(tmp_path / "w.pt")
    with pytest.raises(AdderconvError, match="do not fit"):
        load_model(tmp_path / "w.pt", arch="vgg_small")
    with pytest.raises(AdderconvError, match="module:factory"):
        load_model(tmp_path / "w.pt", arch="nonsense")


def test_pickled_module_needs_trust(tmp_path):
    torch.save(get_model("lenet5_bn"), tmp_path / "whole.pt")
    with pytest.raises(AdderconvError, match="`trust`"):
        load_model(tmp_path / "whole.pt")
    assert isinstance(load_model(tmp_path / "whole.pt", trust=True), torch.nn.Module)


def test_torchscript_and_pt2_need_trust(tmp_path):
    model = get_model("lenet5_bn").eval()
    x = torch.randn(1, 1, 32, 32)
    torch.jit.trace(model, x).save(str(tmp_path / "m.ts"))
    with pytest.raises(AdderconvError, match="TorchScript"):
        load_model(tmp_path / "m.ts")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    with pytest.raises(AdderconvError, match="pt2"):
        load_model(tmp_path / "m.pt2")
    torch.testing.assert_close(load_model(tmp_path / "m.pt2", trust=True)(x), model(x))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(AdderconvError, match="no such file"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(AdderconvError, match="corrupt"):
        load_model(tmp_path / "bad.pt", arch="lenet5_bn")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(AdderconvError, match="safetensors"):
        load_model(tmp_path / "bad.safetensors", arch="lenet5_bn")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask     # not mkstemp's private 0600


def test_write_json_makes_parents_and_writes_numpy_and_tensor_scalars_as_numbers(tmp_path):
    target = tmp_path / "new" / "dir" / "r.json"
    write_json(target, {"a": np.float32(0.5), "b": torch.tensor(2.0), "c": [1, "x"]})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": 2.0, "c": [1, "x"]}
    assert [f.name for f in target.parent.iterdir()] == ["r.json"]       # no temporary left beside it
