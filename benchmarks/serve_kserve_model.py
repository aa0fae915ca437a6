"""KServe's Python model server serving an ONNX digit classifier through onnxruntime (a contender of serve_load.py).

Run with the Python of an environment that has ``kserve`` and ``onnxruntime``
(KServe pins its own FastAPI/uvicorn, so it usually lives in a venv of its own):

    KSERVE_PYTHON serve_kserve_model.py MODEL.onnx --port 8081

The model's input layout and dtype are read from the model (NHWC float32
scaled by 1/255, or uint8).  Outputs ``probabilities`` (FP32) and ``label``
(INT64), as ``mnist-onnx serve`` answers.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class DigitModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.ready = False

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        node = self.session.get_inputs()[0]
        self.input_name, self.output_name = node.name, self.session.get_outputs()[0].name
        self.uint8_input = node.type == "tensor(uint8)"
        self.shape = (1, 28, 28) if node.shape[1] == 1 else (28, 28, 1)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None, response_headers: dict | None = None):
        pixels = payload.inputs[0].as_numpy()
        n = pixels.shape[0]
        if self.uint8_input:
            x = pixels.astype(np.uint8).reshape((n, *self.shape))
        elif pixels.dtype == np.uint8:
            x = (pixels.astype(np.float32) / np.float32(255)).reshape((n, *self.shape))
        else:
            x = pixels.astype(np.float32).reshape((n, *self.shape))
        probabilities = self.session.run([self.output_name], {self.input_name: x})[0]
        labels = probabilities.argmax(axis=1).astype(np.int64)
        binary = payload.use_binary_outputs
        out_p = InferOutput("probabilities", list(probabilities.shape), "FP32")
        out_p.set_data_from_numpy(probabilities, binary_data=binary)
        out_l = InferOutput("label", list(labels.shape), "INT64")
        out_l.set_data_from_numpy(labels, binary_data=binary)
        return InferResponse(payload.id or "", self.name, [out_p, out_l], use_binary_outputs=binary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--name", default="digits")
    args, _ = parser.parse_known_args()
    sys.argv = sys.argv[:1]  # KServe parses sys.argv itself
    model = DigitModel(args.name, args.model)
    model.load()
    ModelServer(http_port=args.port, enable_grpc=False, workers=1, enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
