"""OpenVINO execution provider (the plugin of the 'openvino' extra): loading, options, parity with the CPU
provider on real held-out digits, thread safety, the bf16 gate on the bundled model, and clean failures."""

from __future__ import annotations

import importlib
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mnist_onnx.errors import MissingExtraError, MnistOnnxError
from mnist_onnx.runtime import bf16_gate, tuning
from mnist_onnx.runtime import openvino as ov
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv

BUNDLED = Path(__file__).resolve().parents[1] / "mnist_onnx" / "runtime" / "bundled"
HAS_PLUGIN = importlib.util.find_spec("onnxruntime_ep_openvino") is not None
needs_plugin = pytest.mark.skipif(
    not HAS_PLUGIN, reason="onnxruntime-ep-openvino is not installed (pip install 'mnist-onnx[openvino]')"
)


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    batch = read_kaggle_csv(BUNDLED / "sample.csv.gz")
    assert batch.labels is not None
    return batch.images[:, :, :, 0], batch.labels.astype(np.int64)


def _predict(session: ort.InferenceSession) -> tuning.Predict:
    inp = session.get_inputs()[0]

    def predict(images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), 1, 28, 28)
        if inp.type == "tensor(float)":
            x = x.astype(np.float32) * np.float32(1 / 255)
        return session.run(None, {inp.name: x})[0]

    return predict


def _session(model: str, config: ov.OpenVINOConfig | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if config is None:
        return ort.InferenceSession(str(BUNDLED / model), options, providers=["CPUExecutionProvider"])
    ov.add_openvino(options, config)
    return ort.InferenceSession(str(BUNDLED / model), options)


def test_config_properties_and_validation() -> None:
    config = ov.OpenVINOConfig("bf16", "THROUGHPUT", num_streams=2, threads=1)
    assert config.properties() == {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": "2",
        "INFERENCE_NUM_THREADS": "1",
    }
    assert '"CPU"' in config.provider_options()["load_config"]
    for bad in (
        ov.OpenVINOConfig("fp16"),
        ov.OpenVINOConfig(performance_hint="FAST"),  # type: ignore[arg-type]
        ov.OpenVINOConfig(num_streams=0),
        ov.OpenVINOConfig(threads=True),
    ):  # type: ignore[arg-type]
        with pytest.raises(MnistOnnxError, match="expected"):
            bad.properties()


def test_missing_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def no_plugin(name: str, *args: object) -> object:
        if name == "onnxruntime_ep_openvino":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)  # what Python says when it is absent
        return real_import(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ov, "_registered_device", lambda: None)
    monkeypatch.setattr(importlib, "import_module", no_plugin)
    monkeypatch.setattr(ov, "_device", None)
    ov._reset_for_tests()
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'mnist-onnx\[openvino\]'"):
            ov.openvino_device()
        assert not ov.openvino_available()
    finally:
        ov._reset_for_tests()


def test_installed_plugin_that_fails_to_import_is_not_called_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Installed, but its shared library cannot be loaded: "not installed" would send the user the wrong way.
    real_import = importlib.import_module

    def broken(name: str, *args: object) -> object:
        if name == "onnxruntime_ep_openvino":
            raise ImportError("libopenvino.so.2520: cannot open shared object file: No such file or directory")
        return real_import(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ov, "_registered_device", lambda: None)
    monkeypatch.setattr(importlib, "import_module", broken)
    monkeypatch.setattr(ov, "_device", None)
    ov._reset_for_tests()
    try:
        with pytest.raises(ov.OpenVINOUnavailableError) as raised:
            ov.openvino_device()
        message = str(raised.value)
        assert "installed but cannot be imported: libopenvino.so.2520" in message
        assert "pip install --force-reinstall 'mnist-onnx[openvino]'" in message and "not installed" not in message
    finally:
        ov._reset_for_tests()


def test_auto_warns_when_the_installed_plugin_cannot_be_used(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_onnx.errors import ProviderFallbackWarning
    from mnist_onnx.runtime import acceleration
    from mnist_onnx.runtime.predictor import DigitClassifier

    monkeypatch.setattr(acceleration, "plugin_installed", lambda: True)
    monkeypatch.setattr(acceleration, "_cuda_offered", lambda: False)
    monkeypatch.setattr(ov, "_device", None)
    monkeypatch.setattr(ov, "_failure", ov.OpenVINOUnavailableError("the OpenVINO plugin could not be loaded: boom"))
    with pytest.warns(ProviderFallbackWarning, match="cannot be used .*could not be loaded: boom"):
        classifier = DigitClassifier(precision="int8", providers="auto")
    assert classifier.providers == ["CPUExecutionProvider"] and classifier.provider_choice is None


@needs_plugin
def test_plugin_that_fails_to_load_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plugin = importlib.import_module("onnxruntime_ep_openvino")
    broken = tmp_path / "libonnxruntime_providers_openvino_plugin.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(plugin, "get_library_path", lambda: str(broken))
    monkeypatch.setattr(ov, "_registered_device", lambda: None)
    monkeypatch.setattr(ov, "_REGISTRATION_NAME", "mnist_onnx_openvino_broken_test")
    monkeypatch.setattr(ov, "_device", None)
    ov._reset_for_tests()
    try:
        with pytest.raises(
            ov.OpenVINOUnavailableError,
            match=r"could not be loaded .*pip install --force-reinstall "
            r"'mnist-onnx\[openvino\]'",
        ):
            ov.openvino_device()
        with pytest.raises(ov.OpenVINOUnavailableError):  # remembered, not retried
            ov.openvino_device()
    finally:
        ov._reset_for_tests()


@needs_plugin
@pytest.mark.parametrize("model", ["digit_cnn.onnx", "digit_cnn.int8.onnx"])
def test_f32_openvino_matches_cpu_provider_on_held_out_digits(
    model: str, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = sample
    session = _session(model, ov.OpenVINOConfig())
    assert session.get_providers()[0] == ov.OPENVINO
    cpu = _predict(_session(model, None))(images)
    for batch in (1, 64, 1000):  # the batch dimension stays dynamic
        got = np.concatenate(
            [_predict(session)(images[i : i + batch]) for i in range(0, 128 if batch == 1 else 1000, batch)]
        )
        ref = cpu[: len(got)]
        # Measured: 1.2e-6 (fp32) and 2.6e-6 (int8) on these digits; OpenVINO's default bf16 moves them by 1e-2.
        np.testing.assert_allclose(got, ref, atol=2e-5, err_msg=f"{model}, batch {batch}")
        assert (got.argmax(1) == ref.argmax(1)).all()


@needs_plugin
def test_openvino_session_is_thread_safe(sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = sample
    predict = _predict(_session("digit_cnn.int8.onnx", ov.OpenVINOConfig()))
    serial = [predict(images[i : i + 50]) for i in range(0, 1000, 50)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(predict, [images[i : i + 50] for i in range(0, 1000, 50)]))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_plugin
def test_bf16_gate_on_the_bundled_model(tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]) -> None:
    if not ov.supports_bf16():
        pytest.skip("this CPU has no bf16 compute (OpenVINO lists no BF16 capability)")
    images, labels = sample
    cache = tuning.TuneCache(tmp_path)
    key = tuning.TrialKey("bf16-gate", "bundled-fp32")
    report = bf16_gate.bf16_gate(
        key,
        lambda: _predict(_session("digit_cnn.onnx", None)),
        lambda: _predict(_session("digit_cnn.onnx", ov.OpenVINOConfig("bf16"))),
        images,
        labels,
        evaluation="bundled sample",
        cache=cache,
    )
    assert report.passed and report.rows == 1000
    assert 0 < report.max_abs_diff < 0.1  # bf16 really ran: probabilities moved, labels held
    # Forced thresholds no real model can meet: refused, with the figures.
    with pytest.raises(Exception, match=r"bf16 refused .*agreement 100\.000% \(0 differ; needed >= 150\.0%\)"):
        bf16_gate.bf16_gate(
            key,
            lambda: _predict(_session("digit_cnn.onnx", None)),
            lambda: _predict(_session("digit_cnn.onnx", ov.OpenVINOConfig("bf16"))),
            images,
            labels,
            evaluation="bundled sample",
            cache=cache,
            min_agreement=1.5,
        )


# -- the classifier, predict_csv and the CLI on OpenVINO ----------------------------------------------------------


@pytest.fixture
def fresh_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of measured choices and no per-process verdicts, for one test."""
    from mnist_onnx.runtime import acceleration

    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "choices"))
    monkeypatch.setenv(acceleration.AUTO_MEASURE_ENV, "1")
    monkeypatch.setattr(acceleration, "_verified", set())
    monkeypatch.setattr(acceleration, "_cpu_reference", {})
    return tmp_path / "choices"


@needs_plugin
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_classifier_on_openvino_matches_cpu_at_every_size(
    precision: str, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    from mnist_onnx.runtime.defaults import DEFAULT_OPENVINO_BATCH_SIZE
    from mnist_onnx.runtime.predictor import DigitClassifier

    images, _ = sample
    clf = DigitClassifier(precision=precision, providers="openvino")  # type: ignore[arg-type]
    cpu = DigitClassifier(precision=precision, providers="cpu")  # type: ignore[arg-type]
    assert clf.providers[0] == ov.OPENVINO and clf.batch_size == DEFAULT_OPENVINO_BATCH_SIZE
    # Odd sizes are padded to powers of two inside: the padding never leaks into the answers.
    for n in (1, 3, 17, 1000):
        np.testing.assert_allclose(
            clf.predict_proba(images[:n]), cpu.predict_proba(images[:n]), atol=2e-5, err_msg=f"{n} images"
        )
    assert (clf.predict(images) == cpu.predict(images)).all()
    # One classifier shared by threads (as a server holds it) gives each caller its own answers.
    parts = [images[i : i + 37] for i in range(0, 1000, 37)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(clf.predict_proba, parts))
    for part, got in zip(parts, together, strict=True):
        np.testing.assert_allclose(got, clf.predict_proba(part), rtol=0, atol=1e-6)


@needs_plugin
def test_predict_csv_streams_through_openvino(holdout_sample: Path, tmp_path: Path) -> None:
    from mnist_onnx.runtime.predictor import predict_csv

    out = tmp_path / "submission.csv"
    frame = predict_csv(
        holdout_sample, precision="int8", providers="openvino", output=out, batch_size=64, chunk_rows=300
    )
    cpu = predict_csv(holdout_sample, precision="int8", providers="cpu")
    assert frame.attrs["providers"][0] == ov.OPENVINO
    assert (frame["Label"].to_numpy() == cpu["Label"].to_numpy()).all()
    assert out.read_text().splitlines()[0] == "ImageId,Label" and len(out.read_text().splitlines()) == 1001


@needs_plugin
@pytest.mark.parametrize(
    ("speeds", "expected"),
    [({"cpu": 100.0, "openvino": 1000.0}, ov.OPENVINO), ({"cpu": 1000.0, "openvino": 100.0}, "CPUExecutionProvider")],
)
def test_auto_runs_the_measured_choice_and_caches_it(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch, speeds: dict[str, float], expected: str
) -> None:
    from mnist_onnx.runtime import acceleration
    from mnist_onnx.runtime.predictor import DigitClassifier

    if acceleration._cuda_offered():
        pytest.skip("with CUDA offered, auto means CUDA")
    trials: list[int] = []

    def fake_measure(
        candidates: dict[str, tuning.Predict], images: np.ndarray, batch: int, **_: object
    ) -> dict[str, float]:
        trials.append(batch)
        for predict in candidates.values():  # the candidates are real, working classifiers
            assert predict(images[:batch]).shape == (batch, 10)
        return dict(speeds)

    monkeypatch.setattr(tuning, "measure", fake_measure)
    clf = DigitClassifier(precision="int8")
    assert clf.providers[0] == expected
    assert clf.provider_choice is not None and clf.provider_choice.images_per_second == speeds
    again = DigitClassifier(precision="int8")
    assert again.providers[0] == expected and again.provider_choice is not None
    assert again.provider_choice.from_cache
    # One trial: the smaller call sizes are measured only when OpenVINO won the main one.
    main, smaller = acceleration.TRIAL_CHUNK, sorted(acceleration.TRIAL_SIZES, reverse=True)
    assert trials == ([main, *smaller] if expected == ov.OPENVINO else [main])
    assert (fresh_choices / "measured-choices.json").exists()


@needs_plugin
def test_auto_on_openvino_sends_calls_below_the_crossover_to_the_cpu_provider(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch, holdout_sample: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    from mnist_onnx.runtime import acceleration
    from mnist_onnx.runtime.predictor import DigitClassifier, predict_csv

    if acceleration._cuda_offered():
        pytest.skip("with CUDA offered, auto means CUDA")
    images, _ = sample
    # OpenVINO wins at 256 and 16 images per call, loses at 1: the crossover is 16.
    monkeypatch.setattr(
        tuning,
        "measure",
        lambda candidates, images, batch, **_: {"cpu": 100.0, "openvino": 1000.0 if batch >= 16 else 10.0},
    )
    clf = DigitClassifier(precision="int8")
    assert clf.providers[0] == ov.OPENVINO
    assert clf.provider_choice is not None and clf.provider_choice.cpu_below == 16
    cached = DigitClassifier(precision="int8")  # the crossover comes back from the cache
    assert cached.provider_choice is not None and cached.provider_choice.from_cache
    assert cached.provider_choice.cpu_below == 16
    openvino_runs: list[int] = []
    real_run = clf.session.run

    def spy(output_names: object, feed: dict[str, np.ndarray], *args: object) -> object:
        openvino_runs.append(len(next(iter(feed.values()))))
        return real_run(output_names, feed, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(clf.session, "run", spy)
    cpu = DigitClassifier(precision="int8", providers="cpu")
    builds: list[int] = []
    make_cpu = clf._small_calls._make_cpu
    monkeypatch.setattr(clf._small_calls, "_make_cpu", lambda: builds.append(1) or make_cpu())
    # Small calls, from several threads at once: the CPU-provider twin runs them (built once), OpenVINO never.
    singles = [images[i] for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(clf.predict_proba, singles))
    assert openvino_runs == [] and builds == [1]
    assert clf._small_calls._cpu.providers == ["CPUExecutionProvider"]
    for image, p in zip(singles, got, strict=True):
        np.testing.assert_allclose(p, cpu.predict_proba(image), rtol=0, atol=1e-6)
    assert (clf.predict(images[:15]) == cpu.predict(images[:15])).all() and openvino_runs == []
    # At the crossover and above, OpenVINO runs them (unless it would pad them): the same labels.
    assert (clf.predict(images[:16]) == cpu.predict(images[:16])).all() and openvino_runs == [16]
    assert (clf.predict(images[:17]) == cpu.predict(images[:17])).all() and openvino_runs == [16]
    assert (clf.predict(images[:32]) == cpu.predict(images[:32])).all() and openvino_runs == [16, 32]
    assert (clf.predict(images) == cpu.predict(images)).all() and openvino_runs == [16, 32, 512, 512]
    # The CSV path still streams through OpenVINO with the CPU provider's labels.
    frame = predict_csv(holdout_sample, precision="int8", chunk_rows=300)
    assert frame.attrs["providers"][0] == ov.OPENVINO
    assert (frame["Label"].to_numpy() == cpu.predict(images)).all()


@needs_plugin
def test_openvino_labels_that_differ_from_cpu_are_refused_or_fall_back(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_onnx.errors import ProviderError, ProviderFallbackWarning
    from mnist_onnx.runtime import acceleration
    from mnist_onnx.runtime.model_source import load_model
    from mnist_onnx.runtime.predictor import DigitClassifier

    if acceleration._cuda_offered():
        pytest.skip("with CUDA offered, auto means CUDA")
    source = load_model(None, precision="int8")
    images, labels, _ = acceleration.sample_digits()
    # A CPU reference whose labels are all shifted by one: OpenVINO's (right) labels now "differ".
    wrong = np.eye(10, dtype=np.float32)[(labels + 1) % 10]
    acceleration._cpu_reference[acceleration.model_sha256(source.data)] = wrong
    with pytest.raises(ProviderError, match=r"OpenVINO labels \d+ of 1,000 held-out digits .*--provider cpu"):
        DigitClassifier(precision="int8", providers="openvino")
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **_: {"cpu": 1.0, "openvino": 9.0})
    with pytest.warns(ProviderFallbackWarning, match="OpenVINO was faster here but failed its check"):
        clf = DigitClassifier(precision="int8")
    assert clf.providers == ["CPUExecutionProvider"]


@needs_plugin
def test_bf16_precision_passes_its_gate_or_is_refused_with_figures(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.runtime.predictor import DigitClassifier

    if not ov.supports_bf16():
        pytest.skip("this CPU has no bf16 compute (OpenVINO lists no BF16 capability)")
    images = read_kaggle_csv(BUNDLED / "sample.csv.gz").images
    bf16 = DigitClassifier(precision="bf16")  # type: ignore[arg-type]
    fp32 = DigitClassifier(precision="fp32", providers="cpu")
    assert bf16.providers[0] == ov.OPENVINO
    diff = np.abs(bf16.predict_proba(images) - fp32.predict_proba(images)).max()
    assert 0 < diff < 0.1  # bf16 really computes in bf16 (f32 stays within 2e-6)
    assert "bf16-gate" in (fresh_choices / "measured-choices.json").read_text()
    with pytest.raises(Exception, match="precision bf16 runs on OpenVINO"):
        DigitClassifier(precision="bf16", providers="cpu")  # type: ignore[arg-type]
    # Thresholds no model can meet: refused with the figures, CLI exit code 3.
    monkeypatch.setattr(bf16_gate, "BF16_MIN_AGREEMENT", 1.01)
    from mnist_onnx.runtime import acceleration

    monkeypatch.setattr(acceleration, "_verified", set())
    assert main(["predict", "--precision", "bf16", "-q", "--out", "-"]) == 3
    err = capsys.readouterr().err
    assert "bf16 refused" in err and "agreement 100.000%" in err and "needed >= 101.0%" in err


@needs_plugin
def test_cli_provider_flag_and_tune(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.runtime import acceleration

    assert main(["predict", "--provider", "openvino", "--precision", "int8"]) == 0
    assert f"on {ov.OPENVINO}" in capsys.readouterr().out
    if acceleration._cuda_offered():
        return
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **_: {"cpu": 1.0, "openvino": 9.0})
    assert main(["tune", "--precision", "int8", "--batch-size", "64", "--batch-size", "512"]) == 0
    out = capsys.readouterr().out
    assert out.count("bundled int8 model, batch size") == 2 and "openvino (cpu 1 images/s, openvino 9" in out
    cached = (fresh_choices / "measured-choices.json").read_text()
    assert '\\"batch_size\\": 64' in cached and '\\"batch_size\\": 512' in cached


def test_cli_without_the_plugin_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.runtime import acceleration

    monkeypatch.setenv(acceleration.AUTO_MEASURE_ENV, "1")
    monkeypatch.setattr(ov, "_device", None)
    monkeypatch.setattr(ov, "_failure", MissingExtraError("openvino", ov.PLUGIN_DISTRIBUTION))
    assert main(["predict", "--provider", "openvino", "-q", "--out", "-"]) == 4
    assert "pip install 'mnist-onnx[openvino]'" in capsys.readouterr().err
    # auto quietly stays on the CPU provider when the plugin is missing.
    from mnist_onnx.runtime.predictor import DigitClassifier

    assert DigitClassifier(precision="int8", providers="auto").provider_choice is None


@needs_plugin
def test_openvino_options_in_providers_are_refused_not_dropped() -> None:
    from mnist_onnx.errors import ProviderError
    from mnist_onnx.runtime.predictor import DigitClassifier

    with pytest.raises(ProviderError, match=r"options for OpenVINOExecutionProvider .*'device_type': 'GPU'"):
        DigitClassifier(precision="int8", providers=[(ov.OPENVINO, {"device_type": "GPU"})])
    # Without options the pair is the same as the name.
    assert DigitClassifier(precision="int8", providers=[(ov.OPENVINO, {})]).providers[0] == ov.OPENVINO


@needs_plugin
def test_bf16_compute_is_reported_and_an_int8_model_is_refused_plainly(
    fresh_choices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.errors import ModelError
    from mnist_onnx.runtime.predictor import DigitClassifier

    if not ov.supports_bf16():
        pytest.skip("this CPU has no bf16 compute (OpenVINO lists no BF16 capability)")
    bf16 = DigitClassifier(precision="bf16")  # type: ignore[arg-type]
    assert bf16.provider_for(1000) == f"{ov.OPENVINO} (bf16 compute)" and "precision=bf16" in repr(bf16)
    assert main(["predict", "--precision", "bf16"]) == 0
    assert f"on {ov.OPENVINO} (bf16 compute):" in capsys.readouterr().out
    image = Path(__file__).parent / "data" / "images" / "mnist_0000_3.png"
    assert main(["predict", "--precision", "bf16", str(image)]) == 0
    assert f"predicted 1 image with bundled fp32 model digit_cnn.onnx on {ov.OPENVINO} (bf16 compute)" in (
        capsys.readouterr().err  # the predictions went to stdout
    )
    with pytest.raises(ModelError, match="bf16 compute for an fp32 model, and this model is int8 .*use precision int8"):
        DigitClassifier(BUNDLED / "digit_cnn.int8.onnx", precision="bf16")  # type: ignore[arg-type]


def test_images_summary_names_the_provider(capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_onnx.cli import main

    image = Path(__file__).parent / "data" / "images" / "mnist_0000_3.png"
    assert main(["predict", "--provider", "cpu", str(image)]) == 0
    assert "predicted 1 image with bundled fp32 model digit_cnn.onnx on CPUExecutionProvider" in capsys.readouterr().err


@needs_plugin
def test_reports_name_where_auto_really_ran(
    fresh_choices: Path, monkeypatch: pytest.MonkeyPatch, holdout_sample: Path
) -> None:
    from mnist_onnx.runtime import acceleration
    from mnist_onnx.runtime.predictor import DigitClassifier

    if acceleration._cuda_offered():
        pytest.skip("with CUDA offered, auto means CUDA")
    # OpenVINO wins the trial at 256 images per call only: calls below 256 go to the CPU provider.
    monkeypatch.setattr(
        tuning, "measure", lambda candidates, images, batch, **_: {"cpu": 1.0, "openvino": 9.0 if batch >= 256 else 0.5}
    )
    classifier = DigitClassifier(precision="int8", batch_size=128)
    assert classifier.provider_choice is not None and classifier.provider_choice.cpu_below == 256
    assert classifier.provider_for(3) == "CPUExecutionProvider"
    assert classifier.provider_for(1000) == ov.OPENVINO
    # A CSV is predicted by the classifier itself, in its batches of 128 (not routed): it runs on OpenVINO.
    frame = classifier.predict_csv(holdout_sample)
    assert frame.attrs["provider"] == ov.OPENVINO == frame.attrs["providers"][0]


def test_bf16_without_a_usable_plugin_says_what_to_run_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_onnx.runtime.predictor import DigitClassifier

    monkeypatch.setattr(ov, "_device", None)
    monkeypatch.setattr(ov, "_failure", ov.OpenVINOUnavailableError("the OpenVINO plugin could not be loaded: boom"))
    with pytest.raises(ov.OpenVINOUnavailableError, match="boom; on the CPU provider, use precision fp32"):
        DigitClassifier(precision="bf16")  # type: ignore[arg-type]
