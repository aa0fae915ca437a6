"""``python -m mnist_onnx`` is the ``mnist-onnx`` command."""

import sys

from .cli import main

sys.exit(main())
