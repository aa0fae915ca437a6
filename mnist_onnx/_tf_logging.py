"""Keep TensorFlow's C++ log lines off the terminal of the commands that load it.

TensorFlow's C++ runtime logs through its own logger, outside Python's ``logging``:
on a machine without a GPU, ``train`` and ``export`` print lines such as
``E0000 ... cuda_platform.cc:52] failed call to cuInit`` that read like failures
although nothing is wrong.  ``TF_CPP_MIN_LOG_LEVEL`` (0 all, 1 no INFO, 2 no
WARNING, 3 no ERROR) is read once, when TensorFlow's library loads, so it must be
set before the first ``import tensorflow``.  Only the CLI calls this, and only
when the user has not chosen a level: a library must not change the process's
environment.  Real failures still surface as Python exceptions.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: The level the CLI asks for: keep TensorFlow's C++ INFO, WARNING and ERROR lines quiet.
CLI_LEVEL = "3"


def quiet_tensorflow_logs(environ: MutableMapping[str, str] | None = None) -> None:
    """Set ``TF_CPP_MIN_LOG_LEVEL`` for a command that will import TensorFlow, unless the user set it.

    Args:
        environ: The environment to change; ``os.environ`` by default.
    """
    target = os.environ if environ is None else environ
    target.setdefault("TF_CPP_MIN_LOG_LEVEL", CLI_LEVEL)
