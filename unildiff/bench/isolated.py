"""``unildiff bench`` with every backend timed in its own Python process, merged into one report.

Why: timing two backends in one process lets one distort the other. Measured on the 2-core CI host
(docs/performance.md, "Process isolation"): after ONNX Runtime had run in the process, glibc's heap
state made torch's 128 px decoder take 330-450 ms instead of 110-140 ms, so the torch-eager baseline,
and with it the reported ONNX Runtime speedup, depended on which backend ran first. Deployments run
one backend per process, so the bench does too.

The parent sends each worker a JSON request on stdin (the model folder, configs, report path); the worker
loads the model with ``UniLDiffPipeline.from_pretrained``, runs :func:`unildiff.bench.run.run_bench`
for its one backend and writes its report atomically. Only JSON crosses the process boundary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from unildiff.backends import check_available
from unildiff.bench.config import BenchConfig, bench_config_from_dict, config_description
from unildiff.bench.run import PhotoBench, speedups
from unildiff.errors import BackendUnavailableError, MissingArtifactError, UniLDiffError
from unildiff.utils.atomic import atomic_write_json

WORKER_MODULE = "unildiff.bench.isolated"
# The folder holding this ``unildiff`` package, first on the worker's path: it runs the parent's code.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def _request(model: Path, config: BenchConfig, onnx_dir, engine_dir, report, photo) -> dict:
    return {
        "model": str(model),
        "bench": config_description(config),
        "photo": None if photo is None else dataclasses.asdict(photo),
        "onnx_dir": str(onnx_dir),
        "engine_dir": str(engine_dir),
        "report": str(report),
    }


def _median_round(rows: list[dict]) -> dict:
    """The row of the round with the median ``median_ms`` (lower middle for an even count), plus every
    round's median, so each row's fields (images/s, FLOP/s, memory) stay those of one real measurement."""
    ordered = sorted(rows, key=lambda row: row["median_ms"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(rows) > 1:
        chosen["median_ms_rounds"] = [row["median_ms"] for row in rows]
    return chosen


def _merge_rounds(trees: list[dict]) -> dict:
    """Nested ``{name: ... {name: row}}`` trees of several rounds → one tree of median-round rows."""
    if "median_ms" in trees[0]:
        return _median_round(trees)
    keys = dict.fromkeys(key for tree in trees for key in tree)
    return {key: _merge_rounds([tree[key] for tree in trees if key in tree]) for key in keys}


def merge_reports(rounds: list[list[dict]]) -> dict:
    """One report from per-backend reports, ``rounds[i]`` holding round i's reports.

    Each row is its median round. ``speedup_vs_torch`` divides the merged medians;
    ``speedup_vs_torch_rounds`` pairs torch and each backend round by round (measured minutes apart,
    so slow drift of the host cancels in each pair).
    """
    if not rounds or not rounds[0]:
        raise ValueError("merge_reports needs at least one report")
    reports = [report for round_reports in rounds for report in round_reports]
    merged = {key: reports[0][key] for key in ("host", "config", "sampling")}
    backends = list(dict.fromkeys(name for report in rounds[0] for name in report["config"]["backends"]))
    merged["config"] = dict(merged["config"], backends=backends, rounds=len(rounds))
    merged["process_per_backend"] = True
    merged["components"] = _merge_rounds([report["components"] for report in reports])
    merged["end_to_end"] = _merge_rounds([report["end_to_end"] for report in reports])
    photos = [report["photo"] for report in reports if "photo" in report]
    if photos:
        merged["photo"] = _merge_rounds(photos)
    merged["skipped"] = {}
    for report in reports:
        merged["skipped"].update(report["skipped"])
    merged["speedup_vs_torch"] = speedups(merged["end_to_end"])
    if len(rounds) > 1:
        per_round = [
            speedups({name: rows for report in round_reports for name, rows in report["end_to_end"].items()})
            for round_reports in rounds
        ]
        merged["speedup_vs_torch_rounds"] = {
            backend: {key: [ratios[backend][key] for ratios in per_round] for key in keys}
            for backend, keys in merged["speedup_vs_torch"].items()
        }
    return merged


def run_bench_isolated(
    model: Path,
    config: BenchConfig,
    *,
    onnx_dir: Path,
    engine_dir: Path,
    photo: PhotoBench | None = None,
) -> dict:
    """``run_bench`` for each of ``config.backends`` in a fresh Python process; one merged report.

    With ``config.rounds`` > 1 the backends alternate (torch, onnxruntime, ..., torch, onnxruntime, ...)
    in ``rounds`` fresh processes each, and each row reports its median round.

    Args:
        model: the model folder each worker loads (``models/unildiff``); the rows restore with its
            recorded settings (see :func:`~unildiff.bench.run.run_bench`).
        config: sizes, step counts, repeats, rounds, backends, device and dtype.
        onnx_dir: ``export/onnx`` for the onnxruntime backend.
        engine_dir: ``export/engines`` for the tensorrt backend.
        photo: the photo row (seconds per megapixel), timed in each backend's first-round process only;
            ``None`` leaves it out.

    Raises:
        MissingArtifactError: the model folder is missing (names the stage to run).
        BackendUnavailableError: no backend of ``config.backends`` can run here (a backend that cannot
            is otherwise skipped, with its reason, without a process).
        UniLDiffError: a worker failed (its own error is printed above, on the shared stderr).
    """
    unavailable = {}  # backends that cannot run here get no process at all
    for backend in config.backends:
        try:
            check_available(backend, config.device)
        except BackendUnavailableError as error:
            unavailable[backend] = str(error)
    runnable = [backend for backend in config.backends if backend not in unavailable]
    if not runnable:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in unavailable.items())
        raise BackendUnavailableError(f"no backend of bench.backends can run here ({reasons})")
    if not (Path(model) / "model_index.json").is_file():
        raise MissingArtifactError(f"{model} is not a UniLDiff model folder (run `dvc repro package`)")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), environment.get("PYTHONPATH", "")])
    )
    rounds: list[list[dict]] = []
    skipped: dict[str, dict] = {}  # a backend that cannot run is not retried every round
    with tempfile.TemporaryDirectory(prefix="unildiff-bench-") as folder:
        for round_index in range(config.rounds):
            round_reports = []
            for backend in runnable:
                if backend in skipped:
                    round_reports.append(skipped[backend])
                    continue
                report_path = Path(folder) / f"{backend}_{round_index}.json"
                one_backend = dataclasses.replace(config, backends=(backend,), rounds=1)
                # The photo row (about a minute per backend at 1 MP on 2 cores) is timed in round 1 only.
                round_photo = photo if round_index == 0 else None
                request = _request(model, one_backend, onnx_dir, engine_dir, report_path, round_photo)
                completed = subprocess.run(
                    [sys.executable, "-m", WORKER_MODULE],
                    input=json.dumps(request),
                    text=True,
                    env=environment,
                    check=False,
                )
                if completed.returncode != 0 or not report_path.is_file():
                    raise UniLDiffError(
                        f"bench worker for backend {backend!r} failed (exit {completed.returncode}); "
                        "its error is printed above"
                    )
                report = json.loads(report_path.read_text())
                if backend in report["skipped"]:
                    skipped[backend] = report
                round_reports.append(report)
            rounds.append(round_reports)
    report = merge_reports(rounds)
    report["config"]["backends"] = list(config.backends)
    report["skipped"].update(unavailable)
    return report


def worker_main(request_text: str) -> None:
    """Run one backend's bench from a JSON request (see :func:`run_bench_isolated`)."""
    from unildiff.bench.run import run_bench
    from unildiff.pipeline_unildiff import UniLDiffPipeline

    request = json.loads(request_text)
    pipeline = UniLDiffPipeline.from_pretrained(request["model"])
    report = run_bench(
        pipeline,
        bench_config_from_dict(request["bench"]),
        onnx_dir=Path(request["onnx_dir"]),
        engine_dir=Path(request["engine_dir"]),
        photo=None if request.get("photo") is None else PhotoBench(**request["photo"]),
    )
    atomic_write_json(Path(request["report"]), report)


if __name__ == "__main__":
    try:
        worker_main(sys.stdin.read())
    except UniLDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
