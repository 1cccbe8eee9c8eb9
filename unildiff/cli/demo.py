"""``unildiff demo``: serve the trained model as a local web page (Gradio) with an HTTP API."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from unildiff import paths
from unildiff.cli._errors import reported_errors
from unildiff.imageio import DEFAULT_MAX_PIXELS

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Host names that only this machine reaches."""
AUTH_ENV = "UNILDIFF_DEMO_AUTH"
"""Environment variable read for ``--auth`` (keeps the password out of the process list)."""


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"USER:PASS"`` -> ``("USER", "PASS")``; ``None``/empty -> no login.

    Raises:
        ConfigError: no colon, or an empty user or password.
    """
    from unildiff.errors import ConfigError

    if not value:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise ConfigError(f"--auth (or {AUTH_ENV}) must be USER:PASSWORD with both parts non-empty")
    return user, password


def keep_onnxruntime_local() -> None:
    """Turn off ONNX Runtime's usage reports before it loads (``ORT_DISABLE_TELEMETRY``).

    Loading a pipeline imports ONNX Runtime (diffusers looks it up), whose native library otherwise
    resolves and contacts Microsoft's telemetry host about a minute later; the demo runs for hours and
    keeps everything on this machine.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""

    @app.command()
    def demo(
        model: Annotated[Path, typer.Option(help="The model folder (dvc repro writes it).")] = paths.MODEL,
        host: Annotated[
            str, typer.Option(help="Address to listen on; 0.0.0.0 exposes the page to the network.")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
        max_pixels: Annotated[
            int, typer.Option(help="Refuse uploads with more pixels than this.")
        ] = DEFAULT_MAX_PIXELS,
        auth: Annotated[
            str | None,
            typer.Option(
                envvar=AUTH_ENV, help=f"USER:PASSWORD login for the page and the API (or ${AUTH_ENV})."
            ),
        ] = None,
        examples: Annotated[
            Path, typer.Option(help="Prepared data whose test crops are the examples (one per task).")
        ] = paths.PREPARED,
        device: Annotated[str, typer.Option(help="Torch device (cpu, cuda).")] = "cpu",
    ) -> None:
        """Serve a web page that restores uploaded images; prints its address. Ctrl+C stops it."""
        from unildiff.errors import BackendUnavailableError, ConfigError

        with reported_errors():
            if max_pixels < 1:
                raise ConfigError(f"--max-pixels must be ≥ 1, got {max_pixels}")
            if not 0 < port < 65536:
                raise ConfigError(f"--port must be in 1..65535, got {port}")
            login = parse_auth(auth)
            try:
                from unildiff.demo.app import build_demo, launch
            except ImportError as error:
                raise BackendUnavailableError(
                    f"the demo needs Gradio ({error}); install it with: pip install -e '.[demo]'"
                ) from None
            from unildiff import UniLDiffPipeline
            from unildiff.demo.examples import example_crops

            keep_onnxruntime_local()
            pipe = UniLDiffPipeline.from_pretrained(model).to(device)
            crops = example_crops(examples, pipe.tasks)
            with tempfile.TemporaryDirectory(prefix="unildiff-demo-") as folder:
                page = build_demo(pipe, crops, max_pixels, Path(folder))
                try:
                    url = launch(page, host, port, login, [crop.lq_path.resolve() for crop in crops])
                except OSError as error:
                    raise ConfigError(
                        f"cannot listen on {host}:{port} ({error}); choose another --port"
                    ) from None
                typer.echo(
                    f"UniLDiff demo on {url} (model {model}; {len(crops)} example(s)); Ctrl+C stops it"
                )
                if host not in LOOPBACK and login is None:
                    typer.echo(
                        f"warning: --host {host} lets the network reach the page without a login "
                        f"(set --auth or ${AUTH_ENV}; docs/demo.md)",
                        err=True,
                    )
                try:
                    page.block_thread()
                finally:
                    page.close()
