"""``mnist-onnx serve``: an HTTP inference server with adaptive batching (the ``serve`` extra).

:func:`mnist_onnx.serve.app.create_app` builds the Starlette app;
:class:`mnist_onnx.serve.batcher.Batcher` is the adaptive batcher;
:mod:`mnist_onnx.serve.protocol` reads and writes the Open Inference Protocol.
Nothing is imported here, so the CLI's ``--help`` does not pay for Starlette.
"""
