"""Planning a Ray run, without Ray: the actors' resources, the input files and where outputs go.

Kept apart from :mod:`.ray_engine` so it can be read, tested and used (for
example by a dry run) without the ``ray`` extra.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MnistOnnxError
from ._types import PathLike

__all__ = ["ResourcePlan", "plan_resources", "expand_csv_paths", "per_file_output", "checked_destinations"]


@dataclass(frozen=True)
class ResourcePlan:
    """What each Ray task and actor asks the scheduler for.

    Attributes:
        workers: Actors in the pool, one onnxruntime session each.
        actor_cpus: CPUs each actor asks for (fractional on small machines).
        read_cpus: CPUs each CSV read task asks for.
        gpus_per_worker: GPUs each actor asks for.
        threads: onnxruntime intra-op threads per actor.
    """

    workers: int
    actor_cpus: float
    read_cpus: float
    gpus_per_worker: float
    threads: int


def plan_resources(
    cluster_cpus: float,
    cluster_gpus: float = 0.0,
    *,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    threads: int | None = None,
) -> ResourcePlan:
    """Size the actors' and read tasks' resource requests so the pipeline always makes progress.

    With every actor asking for a whole CPU, two actors on a 2-CPU Ray never
    both start while a read task holds a CPU, and Ray Data waits forever (seen
    with Ray 2.60 and ``ray.init(num_cpus=2)``).  So one read task and all the
    actors together ask for at most the cluster's CPUs: an actor asks for a
    whole CPU where there are enough, a share of what is left where not.
    Actors ask for more than read tasks, so the two stages stay separate.

    >>> plan_resources(2, workers=2)
    ResourcePlan(workers=2, actor_cpus=0.8, read_cpus=0.4, gpus_per_worker=0.0, threads=1)
    >>> plan_resources(64).workers, plan_resources(64).actor_cpus
    (63, 1.0)

    Args:
        cluster_cpus: CPUs the Ray cluster reports.
        cluster_gpus: GPUs the Ray cluster reports.
        workers: Actors wanted; default one per GPU share with ``gpus_per_worker``,
            else one per CPU but one (which is left for reading).
        gpus_per_worker: GPUs per actor (0 for CPU inference; 0.5 shares a GPU between two).
        threads: onnxruntime threads per actor; default the actor's whole CPUs, at least 1.

    Raises:
        MnistOnnxError: If the cluster has no CPU, or fewer GPUs than the actors ask for.
    """
    if cluster_cpus < 1:
        raise MnistOnnxError(f"the Ray cluster reports {cluster_cpus:g} CPUs, expected at least 1")
    if gpus_per_worker < 0 or (workers is not None and workers < 1):
        raise MnistOnnxError(f"expected workers >= 1 and gpus_per_worker >= 0, got {workers} and {gpus_per_worker:g}")
    if workers is None:
        if gpus_per_worker > 0:
            workers = max(1, math.floor(cluster_gpus / gpus_per_worker + 1e-9))
        else:
            workers = max(1, math.floor(cluster_cpus) - 1)
    if gpus_per_worker > 0 and workers * gpus_per_worker > cluster_gpus + 1e-9:
        raise MnistOnnxError(
            f"{workers} workers × {gpus_per_worker:g} GPUs need "
            f"{workers * gpus_per_worker:g} GPUs, the Ray cluster reports {cluster_gpus:g}"
        )
    # A read task parses (about 0.2 s of CPU per 28,000 rows) a tenth of what
    # an actor spends on inference, so it asks for less: half a CPU, or less
    # on a small machine, and always less than an actor.  That difference also
    # keeps Ray Data from fusing reading into the actors (it fuses stages only
    # when their resource requests match); fused, the actor that read a file
    # would score all of it, and one large file would keep the others idle.
    read_cpus = min(0.5, cluster_cpus / (2 * workers + 1))
    actor_cpus = min(1.0, (cluster_cpus - read_cpus) / workers)
    # Ray counts fractional resources in units of 1/10,000; round down so the sum never exceeds the cluster.
    read_cpus, actor_cpus = math.floor(read_cpus * 1e4) / 1e4, math.floor(actor_cpus * 1e4) / 1e4
    return ResourcePlan(
        workers=workers,
        actor_cpus=actor_cpus,
        read_cpus=read_cpus,
        gpus_per_worker=float(gpus_per_worker),
        threads=threads if threads is not None else max(1, math.floor(actor_cpus)),
    )


def expand_csv_paths(inputs: PathLike | Sequence[PathLike]) -> list[Path]:
    """Turn paths and glob patterns into the list of files, in the order they are scored.

    Patterns expand in sorted order; the inputs keep the order given.

    Raises:
        MnistOnnxError: If there is no input, a pattern matches nothing, or a
            file comes up twice.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise MnistOnnxError("expected at least one CSV path or glob pattern, got none")
    files: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise MnistOnnxError(f"{text}: no file matches this pattern")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(text))
    seen: dict[Path, Path] = {}
    for path in files:
        key = Path(os.path.abspath(path))
        if key in seen:
            raise MnistOnnxError(f"{path}: given twice (as {seen[key]} too); each file is scored once")
        seen[key] = path
    return files


def per_file_output(path: Path, output_dir: Path) -> Path:
    """Where the predictions for ``path`` go: ``output_dir/<name>.predictions.csv``.

    >>> per_file_output(Path("data/part-3.csv.gz"), Path("out")).as_posix()
    'out/part-3.predictions.csv'
    """
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return output_dir / f"{name}.predictions.csv"


def checked_destinations(files: list[Path], output: PathLike | None, output_dir: PathLike | None) -> Path | None:
    """Fail before any work when an output cannot be written or two files would share an output."""
    if output is not None:
        parent = Path(output).parent
        if Path(output).is_dir() or not parent.is_dir():
            raise MnistOnnxError(f"{output}: cannot write, expected a file path in an existing directory")
    if output_dir is None:
        return None
    out_dir = Path(output_dir)
    if not out_dir.is_dir():
        raise MnistOnnxError(f"{out_dir}: expected an existing directory for the per-file outputs")
    owners: dict[Path, Path] = {}
    for path in files:
        destination = per_file_output(path, out_dir)
        if destination in owners:
            raise MnistOnnxError(
                f"{owners[destination]} and {path} would both write {destination}; "
                f"rename one, or score them in separate runs"
            )
        owners[destination] = path
    return out_dir
