"""Sessions: execution providers, their errors and install hints, CUDA fallback, session options."""

from __future__ import annotations

import warnings

import onnxruntime
import pytest
from _models import HAS_CUDA, small_model

from mnist_onnx.errors import MnistOnnxError, ModelError, ProviderError, ProviderFallbackWarning
from mnist_onnx.runtime import session as session_module
from mnist_onnx.runtime.predictor import DigitClassifier
from mnist_onnx.runtime.session import create_session, resolve_providers


def test_provider_names():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto") == (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if HAS_CUDA else ["CPUExecutionProvider"]
    )
    assert resolve_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    "request_, message",
    [
        (["NoSuchExecutionProvider"], "execution provider NoSuchExecutionProvider is not available"),
        (
            "gpu",
            "expected providers 'auto', 'cpu', 'cuda', 'openvino' or a list of onnxruntime provider names, got 'gpu'",
        ),
        ([], "expected at least one execution provider, got an empty list"),
    ],
)
def test_provider_errors_list_what_is_available(request_, message):
    with pytest.raises(ProviderError, match=message) as info:
        resolve_providers(request_)
    if "not available" in message:
        assert f"available: {', '.join(onnxruntime.get_available_providers())}" in str(info.value)


@pytest.mark.skipif(HAS_CUDA, reason="CUDAExecutionProvider is available here")
def test_cuda_without_onnxruntime_gpu_says_how_to_get_it(fp32_model_path):
    with pytest.raises(
        ProviderError,
        match=r"CUDAExecutionProvider is not available .*onnxruntime-gpu.*"
        r"available: .*CPUExecutionProvider",
    ):
        DigitClassifier(fp32_model_path, providers="cuda")


@pytest.mark.parametrize(
    "installed, expected",
    [
        (
            {"onnxruntime"},
            "CUDA needs the onnxruntime-gpu wheel instead of onnxruntime: pip uninstall -y onnxruntime "
            "onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'",
        ),
        (
            {"onnxruntime", "onnxruntime-gpu"},
            "onnxruntime and onnxruntime-gpu are both installed and overwrite each "
            "other's files; keep only the GPU wheel: pip uninstall -y onnxruntime",
        ),
        ({"onnxruntime-gpu"}, "onnxruntime-gpu is installed but does not offer CUDA here"),
    ],
)
def test_cuda_hint_depends_on_the_installed_wheels(monkeypatch, installed, expected):
    from importlib import metadata

    def version(dist):
        if dist not in installed:
            raise metadata.PackageNotFoundError(dist)
        return "1.32.0"

    monkeypatch.setattr(metadata, "version", version)
    from mnist_onnx.runtime.session import cuda_install_hint

    assert cuda_install_hint().startswith(expected)


def test_silent_cuda_fallback_is_reported(monkeypatch):
    # Pretend this onnxruntime build offers CUDA: the session really comes up on the CPU
    # (as onnxruntime-gpu does when the CUDA libraries cannot be loaded), which must be said.
    real = onnxruntime.get_available_providers()
    monkeypatch.setattr(
        session_module.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", *[p for p in real if p != "CUDAExecutionProvider"]],
    )
    if HAS_CUDA:
        pytest.skip("a real CUDA provider is available; the fallback cannot be provoked this way")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = create_session(small_model("nhwc"), providers="cuda")
    assert session.get_providers() == ["CPUExecutionProvider"]
    fallback = [w for w in caught if issubclass(w.category, ProviderFallbackWarning)]
    assert len(fallback) == 1 and "CUDA was requested but <" in str(fallback[0].message)
    assert "runs on CPUExecutionProvider" in str(fallback[0].message)


def test_session_options_are_applied():
    session = create_session(small_model("nhwc"), providers="cpu", threads=1, spinning=False, optimization="basic")
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(MnistOnnxError, match="expected threads to be a positive integer or None, got 0"):
        create_session(small_model("nhwc"), providers="cpu", threads=0)


def test_cuda_sessions_get_the_measured_provider_options(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, data, sess_options=None, providers=None, **kwargs):
            seen.append(providers)
            raise RuntimeError("recorded")

    monkeypatch.setattr(
        session_module.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(session_module.ort, "InferenceSession", Recorder)
    for providers in ("cuda", [("CUDAExecutionProvider", {"use_tf32": "1"}), "CPUExecutionProvider"]):
        with pytest.raises(ModelError, match="recorded"):
            create_session(small_model("nhwc"), providers=providers, cuda_device=1)
    assert seen[0][0] == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": "0"})
    assert seen[-1][0] == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": "1"})  # the caller's option wins
