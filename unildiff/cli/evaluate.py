"""``unildiff evaluate`` (score trained weights on the test split) and ``unildiff check-metrics``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unildiff import paths
from unildiff.cli._errors import reported_errors
from unildiff.cli.restore import ModelOption


def read_gate_config(params_file: Path):
    """Build the typed GateConfig from the ``gate`` section of ``params_file`` (YAML 1.2, as DVC writes)."""
    from unildiff.gate import GateConfig
    from unildiff.params import load_section

    return load_section("gate", GateConfig, path=params_file)


def _evaluate_named(
    pairs: Path | None,
    name: str,
    model: Path,
    task: str,
    prompt: str,
    metrics: list[str] | None,
    y_channel: bool,
    reports: Path,
    device: str,
) -> None:
    """``unildiff evaluate --pairs DIR --name NAME``: the folder and the name are checked before the model
    is opened; the model restores every pair with its recorded settings."""
    from unildiff.data.readers import read_named_pairs
    from unildiff.errors import ConfigError
    from unildiff.evaluation.metrics import METRICS, MetricSuite
    from unildiff.evaluation.named import named_reports_dir, score_named_pairs, write_named_reports
    from unildiff.pipeline_unildiff import UniLDiffPipeline

    if pairs is None or not name:
        raise ConfigError("--pairs DIR and --name NAME go together (reports go to <reports>/named/<NAME>/)")
    if task and prompt:
        raise ConfigError("--task and --prompt exclude each other")
    directory = named_reports_dir(name, reports)
    found = read_named_pairs(pairs)
    suite = MetricSuite(list(metrics or METRICS), y_channel=y_channel, device=device)
    pipeline = UniLDiffPipeline.from_pretrained(model).to(device)
    text = pipeline.prompt_for(task) if task else prompt
    sampler = pipeline.sampler()
    typer.echo(f"{len(found)} pairs in {pairs}; prompt: {text!r}" + (" (blind)" if not text else ""))

    def restore(lq, generator):
        return sampler(lq.to(device), text, generator)

    result = score_named_pairs(found, restore, suite, name, seed=sampler.config.seed)
    payload = write_named_reports(result, directory, pairs)
    typer.echo(f"wrote {directory}: input {payload['input']['avg']}, restored {payload['restored']['avg']}")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``check-metrics`` to ``app``."""

    @app.command()
    def evaluate(
        prepared: Annotated[Path, typer.Option(help="Prepared data folder.")] = paths.PREPARED,
        reports: Annotated[Path, typer.Option(help="Reports folder.")] = paths.REPORTS,
        metric: Annotated[list[str] | None, typer.Option(help="Metric (repeatable); default: all.")] = None,
        y_channel: Annotated[bool, typer.Option(help="PSNR/SSIM on the Y channel.")] = False,
        max_images: Annotated[int, typer.Option(help="At most this many test pairs (0 = all).")] = 0,
        split: Annotated[str, typer.Option(help="test (the reports) | val (tuning).")] = "test",
        model: ModelOption = paths.MODEL,
        pairs: Annotated[
            Path | None,
            typer.Option(
                help="Score a folder of pairs (lq/ + gt/ or input/ + target/) instead of a prepared split; "
                "needs --name."
            ),
        ] = None,
        name: Annotated[
            str, typer.Option(help="Name of the --pairs set: its reports go to <reports>/named/<NAME>/.")
        ] = "",
        task: Annotated[
            str, typer.Option(help="--pairs: a task name or its prompt (`unildiff tasks`); none = blind.")
        ] = "",
        prompt: Annotated[str, typer.Option(help="--pairs: free-text prompt instead of a task.")] = "",
        device: Annotated[str, typer.Option(help="--pairs: torch device (cpu, cuda).")] = "cpu",
    ) -> None:
        """Score the model (with its recorded settings), the degraded input and the ablations on a split
        (test); write reports/. With --pairs DIR --name NAME: score a named folder of pairs instead and
        write reports/named/NAME/ (metrics.json, per_image.csv)."""
        if pairs is not None or name:
            with reported_errors():
                _evaluate_named(pairs, name, model, task, prompt, metric, y_channel, reports, device)
            return
        with reported_errors():
            from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
            from unildiff.evaluation.reports import write_reports
            from unildiff.pipeline_unildiff import UniLDiffPipeline

            config = EvaluateConfig(
                max_images=max_images,
                y_channel=y_channel,
                split=split,
                **({"metrics": tuple(metric)} if metric else {}),
            )
            pipeline = UniLDiffPipeline.from_pretrained(model)
            payload = write_reports(evaluate_model(pipeline, prepared, config), reports)
            typer.echo(f"wrote {reports / 'metrics.json'}: restored {payload.get('restored', {}).get('avg')}")

    @app.command("diagnose-conditioning")
    def diagnose_conditioning(
        cache: Annotated[
            Path, typer.Option(help="Latent cache (encode_latents stage).")
        ] = paths.LATENT_CACHE,
        samples: Annotated[int, typer.Option(help="Cached training pairs to probe.")] = 64,
        seed: Annotated[int, typer.Option(help="Seed of the pair choice and the noise.")] = 0,
        model: ModelOption = paths.MODEL,
    ) -> None:
        """Print the denoiser's eq.-9 noise error with f^LQ shuffled, the prompt removed and DAFF off."""
        with reported_errors():
            from unildiff.evaluation.conditioning import conditioning_usage, format_conditioning
            from unildiff.pipeline_unildiff import UniLDiffPipeline
            from unildiff.training.latent_shards import ShardedLatentCache

            network = UniLDiffPipeline.from_pretrained(model).model
            rows = conditioning_usage(network, ShardedLatentCache(cache), num_samples=samples, seed=seed)
            typer.echo(format_conditioning(rows))

    @app.command("check-metrics")
    def check_metrics_command(
        rev: Annotated[str, typer.Option(help="Baseline git revision (via `dvc metrics diff`).")] = "HEAD",
        baseline_file: Annotated[
            Path | None, typer.Option(help="Baseline metrics JSON instead of a revision.")
        ] = None,
        params: Annotated[Path, typer.Option(help="Params file with the gate section.")] = Path(
            "params.yaml"
        ),
        metrics_file: Annotated[
            Path | None, typer.Option(help="Workspace metrics (default: gate.metrics_file).")
        ] = None,
    ) -> None:
        """Fail (exit 1) when a gated metric is worse than the baseline by more than its tolerance."""
        with reported_errors():
            from unildiff.errors import ConfigError
            from unildiff.gate import check_metrics, metrics_from_dvc, read_metrics_file

            gate = read_gate_config(params)
            if not gate.rules:
                raise ConfigError(f"gate.rules in {params} is empty: nothing to check")
            current_file = metrics_file or Path(gate.metrics_file)
            if baseline_file is not None:
                baseline, current = read_metrics_file(baseline_file), read_metrics_file(current_file)
            else:
                baseline, current = metrics_from_dvc(rev, str(current_file))
            results = check_metrics(baseline, current, gate.rules)
            failed = [result for result in results if result.failed]
            for result in results:
                typer.echo(result.describe(), err=result.failed)
            if failed:
                typer.echo(
                    f"error: {len(failed)} metric(s) regressed: "
                    + ", ".join(result.rule.metric for result in failed),
                    err=True,
                )
                raise typer.Exit(1)
            typer.echo(f"metrics gate passed ({len(results)} rule(s))")

    @app.command("seed-report")
    def seed_report_command(
        runs: Annotated[
            list[Path], typer.Argument(help="per_image.csv of each training run (the name is the file stem).")
        ],
        ablation: Annotated[
            list[str] | None,
            typer.Option(help="NAME=CSV of a trained ablation's run (repeatable; one per seed allowed)."),
        ] = None,
        output: Annotated[Path, typer.Option(help="Markdown report.")] = paths.SEEDS_MD,
        json_output: Annotated[Path, typer.Option(help="JSON report.")] = paths.SEEDS_JSON,
        draws: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 10_000,
    ) -> None:
        """Mean ± std over training seeds, paired-bootstrap intervals and the restoration checks."""
        with reported_errors():
            import json

            from unildiff.errors import ConfigError
            from unildiff.evaluation.seeds import read_per_image, seed_report
            from unildiff.utils.atomic import atomic_write_text

            scores = [read_per_image(path, path.stem) for path in runs]
            ablations: dict[str, list] = {}
            for item in ablation or []:
                name, separator, path = item.partition("=")
                if not separator or not name or not path:
                    raise ConfigError(f"--ablation {item!r} must be NAME=CSV")
                ablations.setdefault(name, []).append(read_per_image(Path(path), f"{name}:{Path(path).stem}"))
            markdown, payload = seed_report(scores, ablations, draws=draws)
            atomic_write_text(output, markdown)
            atomic_write_text(json_output, json.dumps(payload, indent=2) + "\n")
            typer.echo(markdown)
