"""Static int8 quantization: a round trip through the accuracy gate, and a gate that refuses."""

from __future__ import annotations

import copy
import gzip
import json

import numpy as np
import pytest

from mnist_onnx.errors import CsvFormatError, GateError, MnistOnnxError, ModelError
from mnist_onnx.runtime import metadata as meta
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv

onnx = pytest.importorskip("onnx", reason="needs the 'export' extra")
ort = pytest.importorskip("onnxruntime", reason="needs the base install (onnxruntime)")
from onnx import numpy_helper  # noqa: E402

from mnist_onnx.cli import EXIT_ERROR, EXIT_GATE, main  # noqa: E402
from mnist_onnx.export import quantize  # noqa: E402
from mnist_onnx.export.quantize import (  # noqa: E402
    MAX_ACCURACY_DROP,
    MIN_AGREEMENT,
    Int8Comparison,
    QuantOptions,
    gate_failures,
    quantize_int8,
)


def _shift_output_bias(model, amount: float):
    """Add ``amount`` to the logit of digit 3 in an fp32 model's output layer."""
    add = next(
        n
        for n in model.graph.node
        if n.op_type == "Add"
        and n.output[0] in {i for s in model.graph.node if s.op_type == "Softmax" for i in s.input}
    )
    inits = {i.name: i for i in model.graph.initializer}
    name = next(n for n in add.input if n in inits)
    bias = numpy_helper.to_array(inits[name]).copy()
    bias.flat[3] += amount
    inits[name].CopyFrom(numpy_helper.from_array(bias, name))
    return model


@pytest.fixture
def sabotaged_quantizer(monkeypatch):
    """The int8 model is quantized from a model that favours digit 3, so it disagrees with fp32."""
    real = quantize.quantize_model

    def quantize_a_broken_copy(model, calibration_x, options, pixel_scale=1 / 255):
        return real(_shift_output_bias(copy.deepcopy(model), 5.0), calibration_x, options, pixel_scale)

    monkeypatch.setattr(quantize, "quantize_model", quantize_a_broken_copy)


def _accuracy(model_path, csv):
    data = read_kaggle_csv(csv)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = data.images.transpose(0, 3, 1, 2)
    if session.get_inputs()[0].type == "tensor(float)":
        x = x.astype(np.float32) * np.float32(1 / 255)
    probs = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float((probs.argmax(axis=1) == data.labels).mean())


def test_round_trip_passes_the_gate_with_default_thresholds(tiny_quantization, tiny_int8_model_path):
    report = tiny_quantization.report
    assert report["passed"] is True
    assert report["thresholds"] == {"min_agreement": 0.998, "max_accuracy_drop_pp": 0.1}
    assert report["evaluation"]["agreement"] >= 0.998
    assert report["evaluation"]["accuracy_drop_pp"] <= 0.1
    assert report["calibration"]["rows"] == 1000
    assert json.loads(tiny_quantization.report_path.read_text()) == report
    assert tiny_quantization.report_path.name == "tiny.int8.onnx.quantization.json"
    model = onnx.load(tiny_int8_model_path)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert ops & {"QLinearConv", "ConvInteger"} or sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 2
    assert "Softmax" in ops  # the output layer stays float (QuantOptions.float_output_layer)


def test_int8_metadata(tiny_quantization, tiny_int8_model_path, quantizable_onnx_model_path):
    session = ort.InferenceSession(str(tiny_int8_model_path), providers=["CPUExecutionProvider"])
    info = meta.parse_metadata(session.get_modelmeta().custom_metadata_map)
    fp32 = meta.parse_metadata({p.key: p.value for p in onnx.load(quantizable_onnx_model_path).metadata_props})
    assert info.precision == "int8" and fp32.precision == "fp32"
    assert (info.input_layout, info.pixel_scale, info.class_labels, info.output_kind) == (
        fp32.input_layout,
        fp32.pixel_scale,
        fp32.class_labels,
        fp32.output_kind,
    )
    assert info.source_sha256 == fp32.source_sha256
    assert info.quantization == tiny_quantization.report
    assert info.quantization["cpu"].keys() >= {"avx512_vnni", "avx_vnni", "amx_int8"}


def test_int8_accuracy_reproduces_the_report(tiny_quantization, tiny_int8_model_path, holdout_sample):
    assert _accuracy(tiny_int8_model_path, holdout_sample) == tiny_quantization.report["evaluation"]["int8_accuracy"]


def test_gate_refuses_a_sabotaged_model_and_writes_nothing(
    quantizable_onnx_model_path, train_sample, tmp_path, sabotaged_quantizer
):
    with pytest.raises(GateError) as caught:
        quantize_int8(
            quantizable_onnx_model_path,
            tmp_path / "bad.int8.onnx",
            calibration_csv=train_sample,
            calibration_rows=200,
            measure_speed=False,
        )
    message = str(caught.value)
    assert "fails the accuracy gate" in message and "expected at least 99.80%" in message
    assert "differ, rows" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "disagreements, errors_added, passes",
    [
        (2, 1, True),  # 99.8% agreement, 0.1 pp lost: exactly at both limits
        (3, 0, False),  # 99.7% agreement
        (0, 2, False),  # 0.2 pp lost
    ],
)
def test_gate_limits_are_counted_in_images(disagreements, errors_added, passes):
    comparison = Int8Comparison(
        rows=1000, fp32_correct=950, int8_correct=950 - errors_added, changed_rows=np.arange(disagreements)
    )
    failures = gate_failures(comparison, MIN_AGREEMENT, MAX_ACCURACY_DROP)
    assert (failures == []) is passes, failures


def test_calibration_and_evaluation_must_differ(quantizable_onnx_model_path, holdout_sample, tmp_path):
    with pytest.raises(MnistOnnxError, match="are the same"):
        quantize_int8(quantizable_onnx_model_path, tmp_path / "m.int8.onnx", calibration_csv=holdout_sample)
    overlap = tmp_path / "overlap.csv.gz"
    with gzip.open(holdout_sample, "rt") as src, gzip.open(overlap, "wt") as dst:
        dst.writelines(src.readlines()[:21])  # header + 20 of the calibration rows
    with pytest.raises(MnistOnnxError, match="20 of the 20 evaluation images .* are also among the calibration"):
        quantize_int8(
            quantizable_onnx_model_path,
            tmp_path / "m.int8.onnx",
            calibration_csv=holdout_sample,
            evaluation_csv=overlap,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlap.csv.gz"]


def test_evaluation_needs_labels(quantizable_onnx_model_path, train_sample, holdout_sample, tmp_path):
    unlabelled = tmp_path / "test.csv"
    with gzip.open(holdout_sample, "rt") as fh:
        lines = fh.readlines()[:6]
    unlabelled.write_text("".join(line.split(",", 1)[1] for line in lines))
    with pytest.raises(CsvFormatError, match="expected a training file with a 'label' first column"):
        quantize_int8(
            quantizable_onnx_model_path,
            tmp_path / "m.int8.onnx",
            calibration_csv=train_sample,
            evaluation_csv=unlabelled,
        )


def test_refuses_an_int8_input(tiny_int8_model_path, train_sample, tmp_path):
    with pytest.raises(ModelError, match="expected an fp32 model, got one whose metadata says int8"):
        quantize_int8(tiny_int8_model_path, tmp_path / "again.onnx", calibration_csv=train_sample)


@pytest.mark.parametrize(
    "field, value", [("quant_format", "QX"), ("activation_type", "i4"), ("calibrate_method", "Guess")]
)
def test_bad_options(field, value):
    with pytest.raises(MnistOnnxError, match=f"expected {field} one of .*got '{value}'"):
        QuantOptions(**{field: value}).validate()


def test_cli_quantize(quantizable_onnx_model_path, train_sample, tmp_path, capsys):
    out = tmp_path / "cli.int8.onnx"
    args = [
        "quantize",
        str(quantizable_onnx_model_path),
        "--calibration",
        str(train_sample),
        "--out",
        str(out),
        "--calibration-rows",
        "200",
        "--quiet",
    ]
    assert main(args) == 0
    assert out.is_file() and (tmp_path / "cli.int8.onnx.quantization.json").is_file()
    assert capsys.readouterr().err == ""


def _first_conv_is_float_and_input_type(path):
    model = onnx.load(path)
    graph_input = model.graph.input[0]
    consumers = {i: n for n in model.graph.node for i in n.input}
    # From the input, walk through the layout/scaling nodes to the first convolution.
    node = consumers[graph_input.name]
    while node.op_type not in ("Conv", "QLinearConv"):
        node = consumers[node.output[0]]
    conv_input_producer = next((n for n in model.graph.node if node.input[0] in n.output), None)
    weight_producer = next((n for n in model.graph.node if node.input[1] in n.output), None)
    input_is_float = conv_input_producer is None or conv_input_producer.op_type != "DequantizeLinear"
    # Float weights come straight from an initializer.
    float_conv = node.op_type == "Conv" and input_is_float and weight_producer is None
    return float_conv, graph_input.type.tensor_type.elem_type


def test_default_int8_model_takes_uint8_and_keeps_the_first_conv_float(tiny_int8_model_path, tiny_quantization):
    float_conv, elem_type = _first_conv_is_float_and_input_type(tiny_int8_model_path)
    assert float_conv and elem_type == onnx.TensorProto.UINT8
    assert tiny_quantization.report["options"]["float_first_conv"] is True
    assert tiny_quantization.report["options"]["uint8_input"] is True
    # The runtime feeds it raw pixels: same answers as onnxruntime given the CSV's uint8 values.
    from mnist_onnx.runtime.predictor import DigitClassifier

    clf = DigitClassifier(tiny_int8_model_path, providers="cpu")
    assert clf.contract.uint8_input


def test_cli_options_give_the_former_layout(quantizable_onnx_model_path, train_sample, tmp_path):
    out = tmp_path / "former.int8.onnx"
    assert (
        main(
            [
                "quantize",
                str(quantizable_onnx_model_path),
                "--calibration",
                str(train_sample),
                "--out",
                str(out),
                "--calibration-rows",
                "200",
                "--first-conv",
                "int8",
                "--input",
                "float",
                "-q",
            ]
        )
        == 0
    )
    float_conv, elem_type = _first_conv_is_float_and_input_type(out)
    assert not float_conv and elem_type == onnx.TensorProto.FLOAT
    options = json.loads((tmp_path / "former.int8.onnx.quantization.json").read_text())["options"]
    assert options["float_first_conv"] is False and options["uint8_input"] is False


def test_cli_exit_3_when_the_gate_refuses(
    quantizable_onnx_model_path, train_sample, tmp_path, capsys, sabotaged_quantizer
):
    code = main(
        [
            "quantize",
            str(quantizable_onnx_model_path),
            "--calibration",
            str(train_sample),
            "--out",
            str(tmp_path / "m.int8.onnx"),
            "--calibration-rows",
            "200",
            "--quiet",
        ]
    )
    assert code == EXIT_GATE
    err = capsys.readouterr().err
    assert err.startswith("mnist-onnx quantize: refused:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_exit_1_on_a_missing_model(train_sample, tmp_path, capsys):
    code = main(
        [
            "quantize",
            str(tmp_path / "absent.onnx"),
            "--calibration",
            str(train_sample),
            "--out",
            str(tmp_path / "m.int8.onnx"),
        ]
    )
    assert code == EXIT_ERROR
    assert "no such file" in capsys.readouterr().err
