"""Issue 28 (7): what a file asks us to build is bounded before anything is allocated (a 104-byte safetensors
file asking for ``sr_vdsr`` with 10^8 blocks ran past 120 s at 3.4 GB; 30,000 channels allocated 2.7 GB before
the build failed)."""
import json

import pytest

from adderconv.arch import ArchSpec, Budget, FileKwargs
from adderconv.errors import AdderconvError


def _from_file(name, **kwargs):
    return ArchSpec.from_metadata({"adderconv.arch": name, "adderconv.arch_kwargs": json.dumps(kwargs)})


@pytest.fixture()
def no_real_build(monkeypatch):
    """The real build must not start: only the meta-device check runs."""
    def refuse(self, factory):
        raise AssertionError(f"built {self.describe()} for real")

    monkeypatch.setattr(ArchSpec, "_call", refuse)


@pytest.mark.parametrize("kwargs, what", [({"blocks": 10**8}, "modules"), ({"channels": 30000}, "parameter elements"),
                                          ({"num_classes": 10**12}, "parameter elements")])
def test_a_file_cannot_ask_for_a_model_beyond_the_budget(no_real_build, kwargs, what):
    name = "sr_vdsr" if "num_classes" not in kwargs else "lenet5_bn"
    with pytest.raises(AdderconvError, match=f"would hold more than .* {what}"):
        _from_file(name, **kwargs).build(trusted=False)


def test_the_file_budget_holds_when_the_user_names_the_architecture(no_real_build):
    recorded = _from_file("sr_vdsr", blocks=10**8)
    spec = ArchSpec("sr_vdsr", recorded.kwargs)             # what loading does with `arch` sr_vdsr and the file
    assert isinstance(spec.kwargs, FileKwargs)
    with pytest.raises(AdderconvError, match="modules"):
        spec.build()


def test_a_budget_from_the_weights_is_tight():
    spec = _from_file("lenet5_bn", num_classes=2)
    model = spec.build(trusted=False)
    numel = sum(t.numel() for t in model.state_dict().values())
    assert spec.build(budget=Budget.for_weights(numel, len(model.state_dict()))) is not None
    with pytest.raises(AdderconvError, match="parameter elements"):
        ArchSpec("lenet5_bn", FileKwargs(num_classes=10**6)).build(budget=Budget.for_weights(numel, 10))


def test_specs_the_user_chose_build_as_asked():
    assert ArchSpec.parse("lenet5_bn", {"num_classes": 3}).build()[-1].out_features == 3
