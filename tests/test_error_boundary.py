"""A table of bad inputs x commands, through ``main()``: each exits 2 with one line on stderr, no traceback, and
leaves no output file behind."""
import os

import pytest
import torch

import adderconv


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(bytes(range(7, 250, 3)))
    torch.save(adderconv.get_model("lenet5_bn").state_dict(), tmp_path / "lenet.pt")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    _onnx_files(tmp_path)
    _malformed_onnx(tmp_path)
    _malformed_metadata(tmp_path)
    return tmp_path


def _onnx_files(root):
    import onnx
    from onnx import TensorProto, helper

    (root / "empty.onnx").write_bytes(b"")
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    for name, dims, second in (("negative", [1, 3, -4, 8], helper.make_node("Relu", ["y"], ["z"])),
                               ("unknown_op", [1, 3, 8, 8], helper.make_node("FooBar", ["y"], ["z"], domain="x.y"))):
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), second], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)], [out], initializer=[w])
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("x.y", 1)]
        onnx.save(helper.make_model(g, opset_imports=opsets), str(root / f"{name}.onnx"))


def _malformed_onnx(root):
    """Issue 28 (10): ONNX files whose counting raised a traceback (exit 1, read by CI as a regression)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    def save(name, node, inputs, inits=(), out_shape=None, scopes=None):
        if scopes is not None:
            node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=scopes)
        g = helper.make_graph([node], name, [helper.make_tensor_value_info(n, T.FLOAT, d) for n, d in inputs],
                              [helper.make_tensor_value_info("z", T.FLOAT, out_shape)], initializer=list(inits))
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.adderconv", 1)]
        onnx.save(helper.make_model(g, opset_imports=opsets), str(root / f"{name}.onnx"))

    w = helper.make_tensor("w", T.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    scales = helper.make_tensor("sc", T.FLOAT, [6], [1, 1, 2, 2, 2, 2])
    save("resize_6d", helper.make_node("Resize", ["x", "", "sc"], ["z"], mode="linear"), [("x", [1, 3, 2, 2, 2, 2])],
         [scales])
    save("maxpool_no_kernel", helper.make_node("MaxPool", ["x"], ["z"]), [("x", [1, 3, 8, 8])], out_shape=[1, 3, 8, 8])
    save("adder_stride_0", helper.make_node("AdderConv2d", ["x", "w"], ["z"], domain="ai.adderconv",
                                            kernel_shape=[3, 3], strides=[0, 0]), [("x", [1, 3, 8, 8])], [w])
    save("scopes_not_a_list", helper.make_node("Relu", ["x"], ["z"]), [("x", [1, 3, 8, 8])], scopes="5")
    save("matmul_overflow", helper.make_node("MatMul", ["x", "y"], ["z"]), [("x", [2**62] * 20 + [4]),
                                                                              ("y", [4, 2**62])])


def _malformed_metadata(root):
    """Issue 28 (7, 10): safetensors files whose metadata asks for too much or is not what it should be."""
    import json

    from safetensors.torch import save_file

    deep = "[" * 100000 + "]" * 100000
    state = {k: v.contiguous() for k, v in adderconv.get_model("lenet5_bn").state_dict().items()}
    arch = {"adderconv.arch": "lenet5_bn"}
    recipe = lambda layers: json.dumps({"format": "adderconv.recipe/1", "layers": layers})  # noqa: E731
    files = {
        "arch_blocks_1e8": ({}, {"adderconv.arch": "sr_vdsr", "adderconv.arch_kwargs": '{"blocks": 100000000}'}),
        "arch_channels_3e4": ({}, {"adderconv.arch": "sr_vdsr", "adderconv.arch_kwargs": '{"channels": 30000}'}),
        "arch_kwargs_deep": (state, {**arch, "adderconv.arch_kwargs": '{"num_classes": ' + deep + "}"}),
        "recipe_deep": (state, {**arch, "adderconv.recipe": deep}),
        "recipe_entry_int": (state, {**arch, "adderconv.recipe": recipe([5])}),
        "recipe_entry_name_int": (state, {**arch, "adderconv.recipe": recipe([{"name": 5, "from": "Conv2d"}])}),
        "recipe_entry_bn_str": (state, {**arch, "adderconv.recipe": recipe([{"name": "3", "from": "Conv2d",
                                                                              "bn": "yes"}])}),
        "recipe_layers_str": (state, {**arch, "adderconv.recipe": json.dumps({"format": "adderconv.recipe/1",
                                                                               "layers": "3"})}),
        "quant_deep": (state, {**arch, "adderconv.quant": deep}),
    }
    for name, (tensors, metadata) in files.items():
        save_file(tensors, str(root / f"{name}.safetensors"), metadata=metadata)


FINETUNE = ["finetune", "lenet5_bn_adder", "--epochs", "1", "--limit", "16", "--quiet"]
CASES = {
    "finetune --workers -1": [*FINETUNE, "--workers", "-1", "-o", "{t}/run"],
    "finetune --device tpu": [*FINETUNE, "--device", "tpu", "-o", "{t}/run"],
    "finetune --eta -1": [*FINETUNE, "--eta", "-1", "-o", "{t}/run"],
    "finetune --eta nan": [*FINETUNE, "--eta", "nan", "-o", "{t}/run"],
    "finetune --weight-decay -1": [*FINETUNE, "--weight-decay", "-1", "-o", "{t}/run"],
    "finetune --limit -1": [*FINETUNE[:-3], "--limit", "-1", "-o", "{t}/run"],
    "finetune -o under a file": [*FINETUNE, "-o", "{t}/a_file/run"],
    "finetune -o is a file": [*FINETUNE, "-o", "{t}/a_file"],
    "convert empty .pt": ["convert", "{t}/empty.pt", "--arch", "lenet5_bn", "-o", "{t}/out.safetensors"],
    "convert random .pt": ["convert", "{t}/random.pt", "--arch", "lenet5_bn", "-o", "{t}/out.safetensors"],
    "convert random .pt --trust": ["convert", "{t}/random.pt", "--trust", "-o", "{t}/out.safetensors"],
    "convert -o a directory": ["convert", "lenet5_bn", "-o", "{t}/a_dir"],
    "convert -o under a file": ["convert", "lenet5_bn", "-o", "{t}/a_file/out.safetensors"],
    "convert -o read-only fs": ["convert", "lenet5_bn", "-o", "/proc/adderconv-test.safetensors"],
    "convert --arch needs no file": ["convert", "{t}/lenet.pt", "--arch", "os:getcwd", "-o", "{t}/out.safetensors"],
    "export --opset 99": ["export", "lenet5_bn", "--opset", "99", "-o", "{t}/out.onnx"],
    "export empty .pt": ["export", "{t}/empty.pt", "--arch", "lenet5_bn", "-o", "{t}/out.onnx"],
    "export -o a directory": ["export", "lenet5_bn", "-o", "{t}/a_dir"],
    "graph -o under a file": ["graph", "lenet5_bn", "-o", "{t}/a_file/g.graphml"],
    "energy empty .pt": ["energy", "{t}/empty.pt", "--arch", "lenet5_bn"],
    "energy wrong arch for weights": ["energy", "{t}/lenet.pt", "--arch", "resnet20"],
    "convert empty .onnx": ["convert", "{t}/empty.onnx", "-o", "{t}/out.onnx"],
    "convert .onnx with a negative dim": ["convert", "{t}/negative.onnx", "--convert-first", "-o", "{t}/out.onnx"],
    "convert .onnx with an unknown op": ["convert", "{t}/unknown_op.onnx", "--convert-first", "-o", "{t}/out.onnx"],
    "energy empty .onnx": ["energy", "{t}/empty.onnx"],
    "energy .onnx with a negative dim": ["energy", "{t}/negative.onnx"],
    "energy .onnx: 6-d Resize": ["energy", "{t}/resize_6d.onnx"],
    "energy .onnx: MaxPool without kernel_shape": ["energy", "{t}/maxpool_no_kernel.onnx"],
    "energy .onnx: adder node with stride 0": ["energy", "{t}/adder_stride_0.onnx"],
    "energy .onnx: name_scopes not a list": ["energy", "{t}/scopes_not_a_list.onnx"],
    "energy .onnx: MatMul counts overflow a float": ["energy", "{t}/matmul_overflow.onnx"],
    "energy: file asks sr_vdsr with 10^8 blocks": ["energy", "{t}/arch_blocks_1e8.safetensors"],
    "energy: file asks sr_vdsr with 30,000 channels": ["energy", "{t}/arch_channels_3e4.safetensors"],
    "energy: deeply nested arch arguments": ["energy", "{t}/arch_kwargs_deep.safetensors"],
    "energy: deeply nested conversion recipe": ["energy", "{t}/recipe_deep.safetensors"],
    "convert: recipe entry is a number": ["convert", "{t}/recipe_entry_int.safetensors", "-o", "{t}/o.safetensors"],
    "energy: recipe entry name is a number": ["energy", "{t}/recipe_entry_name_int.safetensors"],
    "energy: recipe entry bn is a string": ["energy", "{t}/recipe_entry_bn_str.safetensors"],
    "energy: recipe layers is a string": ["energy", "{t}/recipe_layers_str.safetensors"],
    "energy: deeply nested quantisation recipe": ["energy", "{t}/quant_deep.safetensors"],
    "quantize empty .pt": ["quantize", "{t}/empty.pt", "--arch", "lenet5_bn_adder", "-o", "{t}/q.safetensors"],
    "quantize -o not safetensors": ["quantize", "lenet5_bn_adder", "-o", "{t}/q.pt"],
    "quantize -o a directory": ["quantize", "lenet5_bn_adder", "-o", "{t}/a_dir"],
    "quantize --calib-batches 0": ["quantize", "lenet5_bn_adder", "--calib-batches", "0", "-o", "{t}/q.safetensors"],
    "quantize --method kl": ["quantize", "lenet5_bn_adder", "--method", "kl", "-o", "{t}/q.safetensors"],
    "quantize an .onnx": ["quantize", "{t}/negative.onnx", "-o", "{t}/q.safetensors"],
    "quantize a missing data dir": ["quantize", "lenet5_bn_adder", "--data", "{t}/missing", "--limit", "8",
                                    "-o", "{t}/q.safetensors"],
    "bench --threads 0": ["bench", "--threads", "0", "--no-memory", "--json", "{t}/b.json"],
    "bench --batch -3": ["bench", "--batch", "-3", "--no-memory", "--json", "{t}/b.json"],
    "bench --rounds 0": ["bench", "--rounds", "0", "--no-memory", "--json", "{t}/b.json"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_file(files, run_cli, name):
    before = {p for p in files.rglob("*")}
    code, out, err = run_cli(*(a.format(t=files) for a in CASES[name]))
    assert code == 2, (name, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out + err, (name, err)
    assert {p for p in files.rglob("*")} == before, (name, sorted(map(str, {p for p in files.rglob('*')} - before)))
    assert not os.path.exists("/proc/adderconv-test.safetensors")
