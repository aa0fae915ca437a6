"""Keras → ONNX export: parity with Keras on real digits, metadata, graph cleanup, and a gate that refuses."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from mnist_onnx._fileio import sha256_file
from mnist_onnx.errors import GateError, MnistOnnxError, ModelError
from mnist_onnx.runtime import metadata as meta
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv

onnx = pytest.importorskip("onnx", reason="needs the 'export' extra")
ort = pytest.importorskip("onnxruntime", reason="needs the base install (onnxruntime)")
from onnx import helper, numpy_helper  # noqa: E402

from mnist_onnx.cli import EXIT_ERROR, EXIT_GATE, main  # noqa: E402
from mnist_onnx.export import convert, graph  # noqa: E402
from mnist_onnx.export.convert import PIXEL_SCALE, export_onnx  # noqa: E402


def _keras_probs(keras_model_path, images):
    import keras

    model = keras.models.load_model(keras_model_path, compile=False)
    return model.predict(images.astype(np.float32) / np.float32(255.0), batch_size=256, verbose=0)


def _onnx_probs(onnx_path, images, batch_size):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = images.astype(np.float32) * np.float32(PIXEL_SCALE)
    x = x.transpose(0, 3, 1, 2)  # the exported model is NCHW
    return np.concatenate(
        [session.run(["probabilities"], {"image": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    )


def _break_last_bias(model):
    """Add 0.5 to one bias of the output layer: every image's probabilities move."""
    last_add = [n for n in model.graph.node if n.op_type in ("Add", "Gemm")][-1]
    inits = {i.name: i for i in model.graph.initializer}
    name = next(n for n in last_add.input if n in inits)
    bias = numpy_helper.to_array(inits[name]).copy()
    bias.flat[3] += 0.5
    inits[name].CopyFrom(numpy_helper.from_array(bias, name))
    return model


@pytest.fixture
def sabotaged_converter(monkeypatch):
    real = convert.convert_keras

    def convert_and_break(*args, **kwargs):
        model, rewrites = real(*args, **kwargs)
        return _break_last_bias(model), rewrites

    monkeypatch.setattr(convert, "convert_keras", convert_and_break)


def test_export_matches_keras_on_real_digits_at_two_batch_sizes(
    tiny_keras_model_path, tiny_onnx_model_path, holdout_sample
):
    images = read_kaggle_csv(holdout_sample).images[:300]
    expected = _keras_probs(tiny_keras_model_path, images)
    for batch_size in (1, 128):
        got = _onnx_probs(tiny_onnx_model_path, images, batch_size)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"batch size {batch_size}")
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all(), f"batch size {batch_size}"


def test_parity_report_beside_the_model_and_in_its_metadata(tiny_export):
    report = json.loads(tiny_export.parity_path.read_text())
    assert tiny_export.parity_path.name == "tiny.onnx.parity.json"
    assert report["passed"] is True
    assert report["validation_rows"] == 1000
    assert {"edge input all-black", "edge input all-white"} <= set(report["edge_inputs"])
    assert len(report["onnxruntime"]) == 2
    for figures in [*report["onnxruntime"].values(), report["reference_evaluator"]]:
        assert figures["max_abs_diff"] <= 1e-5
        assert figures["argmax_agreement"] == 1.0
    assert report["onnx_accuracy"] == report["keras_accuracy"]
    assert json.loads(tiny_export.metadata[meta.KEY_PARITY]) == report


def test_metadata_contract(tiny_keras_model_path, tiny_onnx_model_path):
    session = ort.InferenceSession(str(tiny_onnx_model_path), providers=["CPUExecutionProvider"])
    info = meta.parse_metadata(session.get_modelmeta().custom_metadata_map)
    assert info.input_layout == "NCHW"
    assert info.pixel_scale == 1 / 255
    assert info.class_labels == tuple("0123456789")
    assert info.output_kind == "probabilities"
    assert info.precision == "fp32"
    assert info.source_sha256 == sha256_file(tiny_keras_model_path)
    report = json.loads((tiny_keras_model_path.parent / "report.json").read_text())
    assert info.training["recipe"] == report["recipe"]
    assert info.training["kept_val_accuracy"] == report["kept_val_accuracy"]
    assert {"tensorflow", "tf2onnx", "onnx", "onnxruntime"} <= info.versions.keys()
    assert info.parity["passed"] is True


def test_graph_is_clean_named_and_dynamic(tiny_onnx_model_path):
    model = onnx.load(tiny_onnx_model_path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    ops = [n.op_type for n in model.graph.node]
    assert not {"Transpose", "Shape", "Gather", "Concat", "Reshape"} & set(ops), ops
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (graph_input.name, dims(graph_input)) == ("image", ["N", 1, 28, 28])
    assert (graph_output.name, dims(graph_output)) == ("probabilities", ["N", 10])


def test_fold_flatten_transpose_keeps_results():
    rng = np.random.default_rng(0)
    c, h, w, k = 3, 4, 5, 6
    weight = rng.standard_normal((h * w * c, k)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", k])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([-1, h * w * c], np.int64), "shape")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    from onnx.reference import ReferenceEvaluator

    before = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert graph.fold_flatten_transpose(model)
    assert [n.op_type for n in model.graph.node] == ["Flatten", "MatMul"]
    after = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    assert not graph.fold_flatten_transpose(model)  # nothing left to fold


def test_gate_refuses_an_altered_model_and_writes_nothing(tiny_keras_model_path, tmp_path, sabotaged_converter):
    out = tmp_path / "broken.onnx"
    with pytest.raises(GateError) as caught:
        export_onnx(tiny_keras_model_path, out)
    message = str(caught.value)
    assert "does not match the Keras model" in message
    assert "sample.csv.gz row" in message  # names the images
    assert "> 1e-05" in message  # says by how much
    assert list(tmp_path.iterdir()) == []


def test_gate_refusal_keeps_an_existing_model(tiny_keras_model_path, tmp_path, sabotaged_converter):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    with pytest.raises(GateError):
        export_onnx(tiny_keras_model_path, out)
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_validation_csv_must_have_enough_real_digits(tiny_keras_model_path, tmp_path, holdout_sample):
    with gzip.open(holdout_sample, "rt") as fh:
        lines = fh.readlines()[:11]
    small = tmp_path / "small.csv"
    small.write_text("".join(lines))
    with pytest.raises(MnistOnnxError, match="expected at least 1,000 validation rows.*got 10"):
        export_onnx(tiny_keras_model_path, tmp_path / "m.onnx", validation_csv=small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.csv"]


@pytest.mark.parametrize("opset", [12, 19])
def test_opset_out_of_range(tiny_keras_model_path, tmp_path, opset):
    with pytest.raises(MnistOnnxError, match=f"expected an opset from 13 to 18.*got {opset}"):
        export_onnx(tiny_keras_model_path, tmp_path / "m.onnx", opset=opset)


def test_missing_keras_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        export_onnx(tmp_path / "absent.keras", tmp_path / "m.onnx")


def test_cli_export_success(tiny_keras_model_path, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(tiny_keras_model_path), "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and (tmp_path / "cli.onnx.parity.json").is_file()
    assert capsys.readouterr().err == ""


def test_cli_exit_3_when_the_gate_refuses(tiny_keras_model_path, tmp_path, capsys, sabotaged_converter):
    code = main(["export", str(tiny_keras_model_path), "--out", str(tmp_path / "m.onnx"), "--quiet"])
    assert code == EXIT_GATE
    err = capsys.readouterr().err
    assert err.startswith("mnist-onnx export: refused:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_exit_1_on_a_missing_model(tmp_path, capsys):
    code = main(["export", str(tmp_path / "absent.keras"), "--out", str(tmp_path / "m.onnx")])
    assert code == EXIT_ERROR
    assert "no such file" in capsys.readouterr().err


def test_importing_export_does_not_import_tensorflow_or_onnx():
    code = (
        "import sys, mnist_onnx.export, mnist_onnx.export.cli, mnist_onnx.runtime.metadata, mnist_onnx.cli;"
        "mnist_onnx.cli.build_parser();"
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
