"""The ``unildiff`` command line (typer). Each area registers its commands from its own module.

Command modules import heavy libraries (torch, diffusers) inside the command functions, so
``unildiff --help`` stays fast.
"""

from __future__ import annotations

import typer

from unildiff.cli import data, demo, deploy, evaluate, export, restore, train

app = typer.Typer(
    name="unildiff",
    help="All-in-one image restoration with latent-diffusion priors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """All-in-one image restoration with latent-diffusion priors."""


for module in (data, train, restore, evaluate, export, demo, deploy):
    module.register(app)


@app.command()
def version() -> None:
    """Print the installed UniLDiff version."""
    from unildiff import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
