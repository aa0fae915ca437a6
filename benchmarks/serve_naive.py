"""A naive server (a contender of serve_load.py): one Starlette handler that predicts each request on its own.

Same request parsing and response encoding as ``mnist-onnx serve`` (Open
Inference Protocol, JSON and binary tensor data), but no queue, no batching
and no limits: the handler calls ``DigitClassifier.predict_proba`` directly on
the event loop.  It shows what the batching design costs or gains.

    python serve_naive.py --port 8082 [--precision fp32|int8] [--model PATH]
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mnist_onnx.runtime import DigitClassifier
from mnist_onnx.serve.protocol import BadRequest, encode_infer_response, error_body, parse_infer_request


def build(classifier: DigitClassifier, name: str) -> Starlette:
    async def infer(request: Request) -> Response:
        try:
            parsed = parse_infer_request(await request.body(), request.headers.get("inference-header-content-length"))
        except BadRequest as exc:
            return Response(error_body(str(exc)), status_code=400, media_type="application/json")
        probabilities = classifier.predict_proba(parsed.images)
        body, headers = encode_infer_response(name, parsed, probabilities, probabilities.argmax(axis=1))
        return Response(body, headers=headers)

    async def ready(request: Request) -> Response:
        return Response(b"")

    return Starlette(
        routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--model")
    parser.add_argument("--precision", choices=("fp32", "int8"))
    parser.add_argument("--name", default="digits")
    args = parser.parse_args()
    classifier = DigitClassifier(args.model, precision=args.precision)
    uvicorn.run(build(classifier, args.name), host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
