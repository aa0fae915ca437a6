"""Measured choices: the cache (keying, invalidation, atomic and thread-safe writes), the provider decision
rule, and the bf16 gate's arithmetic and caching.  No test reads the clock: trial speeds are given."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from mnist_onnx.errors import CacheWarning, GateError, MnistOnnxError
from mnist_onnx.runtime import bf16_gate, tuning
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.tuning import TrialKey, TuneCache

HOLDOUT = Path(__file__).resolve().parents[1] / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TuneCache:
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))
    return TuneCache()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    batch = read_kaggle_csv(HOLDOUT)
    assert batch.labels is not None
    return batch.images[:64, :, :, 0], batch.labels[:64].astype(np.int64)


def _key(**changes: object) -> TrialKey:
    fields = {
        "purpose": "provider",
        "model_sha256": "a" * 64,
        "batch_size": 64,
        "machine": "cpu X; amx_int8; 2 cores",
        "versions": (("onnxruntime", "1.32.0"),),
    }
    fields.update(changes)
    return TrialKey(**fields)  # type: ignore[arg-type]


def test_cache_dir_follows_env_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(tuning.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning.cache_dir() == tmp_path / "xdg" / "mnist-onnx"
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "mine"))
    assert tuning.cache_dir() == tmp_path / "mine"


def test_machine_id_names_cpu_features_and_cores() -> None:
    text = tuning.machine_id()
    assert text.endswith("cores")
    assert text.count(";") == 2


def test_cache_round_trip_leaves_no_temporary_files(cache: TuneCache) -> None:
    assert cache.get(_key()) is None
    cache.put(_key(), {"provider": "openvino"})
    assert cache.get(_key()) == {"provider": "openvino"}
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]
    assert json.loads(cache.path.read_text())["format"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"batch_size": 512},
        {"model_sha256": "b" * 64},
        {"machine": "another CPU"},
        {"versions": (("onnxruntime", "1.33.0"),)},
        {"purpose": "bf16-gate"},
    ],
)
def test_every_key_part_invalidates(cache: TuneCache, change: dict[str, object]) -> None:
    cache.put(_key(), {"provider": "openvino"})
    assert cache.get(_key(**change)) is None
    assert cache.get(_key()) == {"provider": "openvino"}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"format": 1, "entries": {"x": tru', "is not valid JSON"),
        ("[1, 2]", "is not a cache of measured choices"),
        ('{"format": 99, "entries": {}}', "has format 99, this version reads 1"),
    ],
)
def test_damaged_cache_counts_as_empty_says_so_and_is_rewritten(cache: TuneCache, content: str, why: str) -> None:
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text(content)
    with pytest.warns(CacheWarning, match=f"{why}.*counts as empty, and the next choice measured replaces it"):
        assert cache.get(_key()) is None
    with pytest.warns(CacheWarning):
        assert cache.put(_key(), {"provider": "cpu"})
    assert cache.get(_key()) == {"provider": "cpu"}


def test_unwritable_cache_is_skipped_with_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = TuneCache(blocker / "sub")
    with pytest.warns(CacheWarning, match=f"cannot save .*measured again next time: set {tuning.CACHE_ENV}"):
        assert not cache.put(_key(), {"provider": "cpu"})  # no exception: measured again next time
    assert cache.get(_key()) is None


def test_clear_of_an_unwritable_cache_is_a_one_line_error(cache: TuneCache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.put(_key(), {"provider": "cpu"})

    def read_only(entries: dict[str, object]) -> None:
        raise PermissionError(13, "Permission denied", str(cache.path))

    monkeypatch.setattr(cache, "_write", read_only)
    with pytest.raises(MnistOnnxError, match="cannot forget the cached choices .*Permission denied"):
        cache.clear()


def test_tune_says_when_its_answer_could_not_be_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.runtime import acceleration

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(tuning.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(acceleration, "openvino_available", lambda: True)
    monkeypatch.setattr(acceleration, "plugin_installed", lambda: True)
    monkeypatch.setattr(acceleration, "_cuda_offered", lambda: False)
    monkeypatch.setattr(acceleration, "_trial_candidate", lambda pinned, provider: lambda images: images)
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **_: {"cpu": 2.0, "openvino": 1.0})
    assert main(["tune", "--precision", "int8"]) == 0
    captured = capsys.readouterr()
    assert "bundled int8 model, batch size default: cpu" in captured.out
    assert "cached in" not in captured.out and "not cached:" in captured.out
    assert captured.err.count("mnist-onnx tune: warning: cannot save the measured choice") == 1


def test_concurrent_writers_keep_every_entry(cache: TuneCache) -> None:
    def write(i: int) -> None:
        for j in range(5):
            cache.put(_key(batch_size=i * 100 + j), {"provider": "cpu", "i": i, "j": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        for j in range(5):
            assert cache.get(_key(batch_size=i * 100 + j)) == {"provider": "cpu", "i": i, "j": j}


def test_clear_by_purpose(cache: TuneCache) -> None:
    cache.put(_key(), {"provider": "cpu"})
    cache.put(_key(purpose="bf16-gate"), {"report": {}})
    assert cache.clear("provider") == 1
    assert cache.get(_key()) is None
    assert cache.get(_key(purpose="bf16-gate")) == {"report": {}}


class _Factory:
    """A candidate factory that counts how often a trial built it; its predict is a real (trivial) function."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self) -> tuning.Predict:
        self.built += 1
        return lambda images: np.full((len(images), 10), 0.1, np.float32)


@pytest.mark.parametrize(
    ("cpu", "openvino", "expected"), [(1000.0, 2000.0, "openvino"), (1000.0, 1200.0, "cpu"), (1000.0, 900.0, "cpu")]
)
def test_openvino_must_beat_cpu_by_the_margin(
    cache: TuneCache,
    monkeypatch: pytest.MonkeyPatch,
    digits: tuple[np.ndarray, np.ndarray],
    cpu: float,
    openvino: float,
    expected: str,
) -> None:
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **kw: {"cpu": cpu, "openvino": openvino})
    choice = tuning.choose_provider(_key(), {"cpu": _Factory(), "openvino": _Factory()}, digits[0], cache=cache)
    assert (choice.provider, choice.from_cache) == (expected, False)
    assert choice.images_per_second == {"cpu": cpu, "openvino": openvino}


def test_cached_choice_skips_the_trial_until_remeasured(
    cache: TuneCache, monkeypatch: pytest.MonkeyPatch, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    speeds = {"cpu": 1000.0, "openvino": 3000.0}
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **kw: dict(speeds))
    cpu, openvino = _Factory(), _Factory()
    first = tuning.choose_provider(_key(), {"cpu": cpu, "openvino": openvino}, digits[0], cache=cache)
    speeds["openvino"] = 500.0
    second = tuning.choose_provider(_key(), {"cpu": cpu, "openvino": openvino}, digits[0], cache=cache)
    assert (first.provider, second.provider, second.from_cache) == ("openvino", "openvino", True)
    assert (cpu.built, openvino.built) == (1, 1)
    third = tuning.choose_provider(_key(), {"cpu": cpu, "openvino": openvino}, digits[0], cache=cache, remeasure=True)
    assert (third.provider, third.from_cache, openvino.built) == ("cpu", False, 2)
    # Another batch size is another trial.
    tuning.choose_provider(_key(batch_size=16), {"cpu": cpu, "openvino": openvino}, digits[0], cache=cache)
    assert openvino.built == 3


def test_cached_choice_of_a_provider_not_offered_now_is_remeasured(
    cache: TuneCache, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    cache.put(_key(), {"provider": "openvino", "images_per_second": {}})
    cpu = _Factory()
    choice = tuning.choose_provider(_key(), {"cpu": cpu}, digits[0], cache=cache)
    assert choice.provider == "cpu"


def test_measure_runs_real_predict_functions(digits: tuple[np.ndarray, np.ndarray]) -> None:
    calls: list[int] = []

    def predict(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return np.zeros((len(images), 10), np.float32)

    speeds = tuning.measure({"cpu": predict}, digits[0], 16, rounds=2, block_seconds=0.0)
    assert set(speeds) == {"cpu"} and speeds["cpu"] > 0
    assert set(calls) == {16}
    with pytest.raises(MnistOnnxError, match="positive batch size"):
        tuning.measure({"cpu": predict}, digits[0], 0)


def test_evaluate_bf16_counts_disagreements_and_accuracy_drop() -> None:
    labels = np.arange(1000) % 10
    fp32 = np.eye(10, dtype=np.float32)[labels]
    bf16 = fp32.copy()
    bf16[:3] = np.eye(10, dtype=np.float32)[(labels[:3] + 1) % 10]  # 3 of 1,000 now wrong
    report = bf16_gate.evaluate_bf16(fp32, bf16, labels, evaluation="toy")
    assert (report.disagreements, report.agreement) == (3, 0.997)
    assert report.accuracy_drop_pp == pytest.approx(0.3)
    assert not report.passed
    assert "3 differ" in report.summary()
    assert bf16_gate.evaluate_bf16(fp32, fp32, labels, evaluation="toy").passed


def test_bf16_gate_refusal_is_cached_with_its_figures(cache: TuneCache, digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    one_hot = np.eye(10, dtype=np.float32)

    def exact() -> tuning.Predict:
        return lambda x: one_hot[labels[: len(x)]] if len(x) == len(labels) else one_hot[np.zeros(len(x), int)]

    wrong_builds: list[int] = []

    def wrong() -> tuning.Predict:
        wrong_builds.append(1)
        return lambda x: one_hot[np.full(len(x), 7)]

    key = _key(purpose="bf16-gate", batch_size=0)
    with pytest.raises(GateError, match=r"bf16 refused .*agreement .*accuracy"):
        bf16_gate.bf16_gate(key, exact, wrong, images, labels, evaluation="sample", cache=cache)
    with pytest.raises(GateError, match="bf16 refused"):
        bf16_gate.bf16_gate(key, exact, wrong, images, labels, evaluation="sample", cache=cache)
    assert len(wrong_builds) == 1  # the second verdict came from the cache
    passed = bf16_gate.bf16_gate(key, exact, exact, images, labels, evaluation="sample", cache=cache, remeasure=True)
    assert passed.passed and passed.agreement == 1.0


# -- the crossover: calls below it stay on the CPU provider ------------------------------------------------------


@pytest.mark.parametrize(
    ("openvino", "expected"),
    [
        ({1: 9.0, 16: 9.0, 256: 9.0}, 0),
        ({1: 4.0, 16: 9.0, 256: 9.0}, 16),
        ({1: 9.0, 16: 4.0, 256: 9.0}, 256),
        ({1: 9.0, 16: 9.0, 256: 4.0}, None),
    ],
)
def test_crossover_is_where_openvino_wins_at_every_larger_size(
    openvino: dict[int, float], expected: int | None
) -> None:
    by_size = {size: {"cpu": 5.0, "openvino": ips} for size, ips in openvino.items()}
    assert tuning.crossover(by_size) == expected


def test_routing_follows_the_cached_crossover(cache: TuneCache) -> None:
    cache.put(
        _key(),
        {
            "provider": "openvino",
            "images_per_second": {"cpu": 5.0, "openvino": 9.0},
            "cpu_below": 16,
            "by_size": {"1": {"cpu": 5.0, "openvino": 4.0}, "16": {"cpu": 5.0, "openvino": 9.0}},
        },
    )
    choice = tuning.choice_from_entry(cache.get(_key()), ["cpu", "openvino"])
    assert choice is not None and (choice.cpu_below, choice.from_cache) == (16, True)
    assert choice.by_size[1] == {"cpu": 5.0, "openvino": 4.0}
    assert [choice.runs_on_cpu(n) for n in (1, 15, 16, 512)] == [True, True, False, False]
    on_cpu = tuning.ProviderChoice("cpu", {}, "", True, cpu_below=0)
    assert on_cpu.runs_on_cpu(512)
    # The classifier's router: below the crossover, or a run OpenVINO would pad to a power of two -> CPU provider.
    from mnist_onnx.runtime.acceleration import SmallCalls

    router = SmallCalls(choice, True, 512, lambda: "cpu twin")
    assert {n: router.runs_on_cpu(n) for n in (1, 15, 16, 17, 32, 300, 512, 1000)} == {
        1: True,
        15: True,
        16: False,
        17: True,
        32: False,
        300: True,
        512: False,
        1000: False,
    }
    assert router.runs_on_cpu(1000, batch_size=100) and not router.runs_on_cpu(1000, batch_size=64)
    assert (router.classifier_for(15), router.classifier_for(16)) == ("cpu twin", None)
    for not_routed in (
        SmallCalls(None, True, 512, lambda: "x"),
        SmallCalls(choice, False, 512, lambda: "x"),
        SmallCalls(on_cpu, True, 512, lambda: "x"),
    ):  # pinned, fallen back, CPU chosen
        assert not not_routed.runs_on_cpu(1) and not_routed.classifier_for(1) is None


@pytest.mark.parametrize(
    "entry",
    [
        {"provider": "openvino"},  # written by a trial of one call size
        {"provider": "openvino", "cpu_below": "16"},
        {"provider": "openvino", "cpu_below": -1},
        {"provider": "openvino", "cpu_below": 16, "by_size": {"x": {}}},
    ],
)
def test_entries_without_a_valid_crossover_are_measured_again(
    cache: TuneCache, monkeypatch: pytest.MonkeyPatch, digits: tuple[np.ndarray, np.ndarray], entry: dict[str, object]
) -> None:
    cache.put(_key(), entry)
    assert tuning.choice_from_entry(cache.get(_key()), ["cpu", "openvino"]) is None
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **kw: {"cpu": 1.0, "openvino": 9.0})
    openvino = _Factory()
    choice = tuning.choose_provider(_key(), {"cpu": _Factory(), "openvino": openvino}, digits[0], cache=cache)
    assert (choice.from_cache, openvino.built, cache.get(_key())["cpu_below"]) == (False, 1, 0)  # type: ignore[index]


def test_trial_measures_smaller_calls_only_when_openvino_wins_and_caches_the_crossover(
    cache: TuneCache, monkeypatch: pytest.MonkeyPatch, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    measured: list[int] = []
    openvino_ips = {256: 9.0, 16: 9.0, 4: 5.0, 1: 9.0}

    def fake_measure(
        candidates: dict[str, tuning.Predict], images: np.ndarray, batch: int, **_: object
    ) -> dict[str, float]:
        measured.append(batch)
        return {"cpu": 5.0, "openvino": openvino_ips[batch]}

    monkeypatch.setattr(tuning, "measure", fake_measure)
    candidates = {"cpu": _Factory(), "openvino": _Factory()}
    choice = tuning.choose_provider(_key(), candidates, digits[0], cache=cache, chunk=256, sizes=(1, 4, 16))
    # Largest first, stopping at the first size the CPU provider wins: 1 is never measured.
    assert measured == [256, 16, 4]
    assert (choice.provider, choice.cpu_below, choice.images_per_second) == (
        "openvino",
        16,
        {"cpu": 5.0, "openvino": 9.0},
    )
    entry = cache.get(_key())
    assert entry is not None and entry["cpu_below"] == 16 and set(entry["by_size"]) == {"4", "16", "256"}
    again = tuning.choose_provider(_key(), candidates, digits[0], cache=cache, chunk=256, sizes=(1, 4, 16))
    assert (again.from_cache, again.cpu_below, len(measured)) == (True, 16, 3)
    # When the CPU provider wins the main trial, no smaller call is measured.
    measured.clear()
    openvino_ips[256] = 4.0
    lost = tuning.choose_provider(_key(), candidates, digits[0], cache=cache, chunk=256, sizes=(1, 16), remeasure=True)
    assert (lost.provider, lost.cpu_below, measured) == ("cpu", 0, [256])


def test_provider_key_names_the_trial_sizes() -> None:
    from mnist_onnx.runtime import acceleration

    key = acceleration.provider_key("a" * 64, 0)
    assert dict(key.extra)["trial_sizes"] == ",".join(map(str, (*acceleration.TRIAL_SIZES, acceleration.TRIAL_CHUNK)))
    # A choice cached under the key of the one-size trial is not found under the new key.
    assert key.text() != tuning.TrialKey("provider", "a" * 64, 0, key.machine, key.versions).text()


def test_tune_help_shows_percent_signs_once(capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_onnx.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "99.8%," in text and "%%" not in text and "~/.cache/mnist-onnx" in text.replace("- ", "-")


def test_tune_takes_a_model_at_its_own_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tune --model INT8.onnx` used to check the model against fp32 and stop with "expected precision fp32".
    from mnist_onnx.cli import main
    from mnist_onnx.runtime import acceleration

    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(acceleration, "openvino_available", lambda: True)
    monkeypatch.setattr(acceleration, "plugin_installed", lambda: True)
    monkeypatch.setattr(acceleration, "_cuda_offered", lambda: False)
    # Each candidate is the real classifier the trial builds (on the CPU provider: no plugin needed); only the
    # timing is faked.
    real = acceleration._predict_of
    monkeypatch.setattr(acceleration, "_trial_candidate", lambda pinned, provider: real(pinned("cpu")))
    monkeypatch.setattr(tuning, "measure", lambda candidates, images, batch, **_: {"cpu": 2.0, "openvino": 1.0})
    int8 = HOLDOUT.parent / "digit_cnn.int8.onnx"
    assert main(["tune", "--model", str(int8)]) == 0
    assert f"{int8}, batch size default: cpu (cpu 2 images/s, openvino 1 images/s)" in capsys.readouterr().out


def test_tune_without_openvino_says_why_nothing_was_measured_and_claims_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.runtime import acceleration, openvino

    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(acceleration, "plugin_installed", lambda: False)
    monkeypatch.setattr(openvino, "plugin_installed", lambda: False)
    monkeypatch.setattr(acceleration, "_cuda_offered", lambda: False)
    assert main(["tune", "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "cpu (nothing measured: OpenVINO is not installed (pip install 'mnist-onnx[openvino]')" in out
    assert "cached in" not in out and not (tmp_path / "cache").exists()
