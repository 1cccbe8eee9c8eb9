"""The demo page (Gradio Blocks): upload, task, advanced settings, before/after slider, PNG download.

One endpoint, ``restore`` (``api_name="restore"``), serves the page's button and the HTTP API
(``gradio_client``). Requests are queued one at a time; a waiting user sees their place in the queue.
Errors a user can cause (a corrupt file, an unsupported mode, a too-large image, a setting the model was
not trained for) are shown in the page with the one line the CLI prints after ``error: ``, and the
server keeps serving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# Set before Gradio is imported: no usage analytics or version checks go out of this machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from unildiff.demo.examples import Example  # noqa: E402
from unildiff.demo.service import (  # noqa: E402
    BLIND,
    Settings,
    describe,
    display_copy,
    load_upload,
    prompt_for,
    restore_upload,
    task_choices,
)
from unildiff.errors import UniLDiffError  # noqa: E402

FILE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"]
"""Suffixes the upload offers; :func:`unildiff.imageio.read_image` decides what it really reads."""

COLOR_FIXES = ["none", "wavelet", "adain", "adaptive"]
"""``sampling.color_fix`` values."""

ERROR_SECONDS = None
"""How long an error message stays in the page: until the user closes it."""

KEEP_SECONDS = 3600
"""Results older than this are deleted (the demo's folder and Gradio's cache alike)."""


def _prune(folder: Path, seconds: float = KEEP_SECONDS) -> None:
    """Delete the request folders in ``folder`` older than ``seconds``."""
    limit = time.time() - seconds
    for request in folder.iterdir():
        if request.is_dir() and request.stat().st_mtime < limit:
            shutil.rmtree(request, ignore_errors=True)


def _prompt_line(task: str, tasks: dict[str, str], prompt_text: str = "") -> str:
    try:
        prompt = prompt_text.strip() or prompt_for(task, tasks)
    except UniLDiffError as error:
        return f"error: {error}"
    return f'Prompt sent: "{prompt}"' if prompt else "Prompt sent: none (blind restoration)"


def build_demo(pipe: Any, examples: list[Example], max_pixels: int, output_dir: Path) -> gr.Blocks:
    """The page for ``pipe`` (a ``UniLDiffPipeline``).

    Args:
        pipe: the model (``pipe.tasks``, ``pipe.sampling``, ``pipe(image, prompt, ...)``).
        examples: degraded crops to offer, each with its task.
        max_pixels: uploads with more pixels are refused (``--max-pixels``).
        output_dir: where the full-resolution downloads are written.

    Returns:
        The Blocks app, queued one request at a time.
    """
    tasks = dict(pipe.tasks)
    recorded = Settings.recorded(pipe.sampling)
    first_task = next(iter(tasks), BLIND)

    def show_input(path: str | None):
        """The input's preview and one line about it; clears the previous result."""
        cleared = (None, None, None, "")
        if not path:
            return None, "", *cleared
        try:
            image = load_upload(path, max_pixels)
        except UniLDiffError as error:
            return None, f"error: {error}", *cleared
        return display_copy(image.rgb), f"Input: {describe(image)}", *cleared

    def restore(
        image,
        task,
        steps,
        cfg,
        seed,
        tile,
        tile_overlap,
        auto_tile,
        color_fix,
        detail_fix_radius,
        detail_fix_wide_radius,
        prompt_text="",
        progress=gr.Progress(),  # noqa: B008 (Gradio's idiom: the default marks the progress tracker)
    ):
        if not image:
            raise gr.Error("no image: upload one or pick an example", duration=ERROR_SECONDS)

        def callback(done: int, total: int, description: str) -> None:
            progress((done, total), desc=description)

        try:
            settings = Settings.from_page(
                steps=steps,
                cfg=cfg,
                seed=seed,
                tile=tile,
                tile_overlap=tile_overlap,
                auto_tile=auto_tile,
                color_fix=color_fix,
                detail_fix_radius=detail_fix_radius,
                detail_fix_wide_radius=detail_fix_wide_radius,
            )
            _prune(output_dir)
            folder = Path(tempfile.mkdtemp(dir=output_dir))
            result = restore_upload(
                pipe, image, task, settings, folder, max_pixels, callback, prompt_text or ""
            )
        except UniLDiffError as error:
            raise gr.Error(str(error), duration=ERROR_SECONDS, print_exception=False) from None
        return (result.before, result.after), result.after, str(result.download), result.summary

    cache = (KEEP_SECONDS, KEEP_SECONDS)  # (how often, how old): Gradio deletes old uploads and results
    with gr.Blocks(title="UniLDiff", analytics_enabled=False, delete_cache=cache) as demo:
        gr.Markdown(
            "# UniLDiff\nAll-in-one image restoration. Upload an image (PNG, JPEG, WebP, 16-bit PNG, "
            "RGBA, greyscale) or pick an example, choose its task and press **Restore**."
        )
        with gr.Row():
            with gr.Column():
                image = gr.File(
                    label="Image", file_types=FILE_TYPES, type="filepath", height=120, elem_id="image"
                )
                preview = gr.Image(
                    label="Input", interactive=False, format="png", height=240, elem_id="preview"
                )
                info = gr.Markdown(elem_id="info")
                task = gr.Dropdown(
                    choices=task_choices(tasks), value=first_task, label="Task", elem_id="task"
                )
                prompt_text = gr.Textbox(
                    value="",  # an initial value makes `prompt_text` optional for gradio_client
                    label="Prompt (optional free text: replaces the task's prompt)",
                    placeholder="e.g. remove the rain streaks from this street photo",
                    elem_id="prompt_text",
                )
                prompt = gr.Markdown(_prompt_line(first_task, tasks), elem_id="prompt")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    steps = gr.Number(recorded.steps, label="Steps", precision=0, elem_id="steps")
                    cfg = gr.Number(recorded.cfg, label="Guidance scale (cfg; ≤ 1: prompt only)")
                    seed = gr.Number(recorded.seed, label="Seed", precision=0, elem_id="seed")
                    tile = gr.Number(recorded.tile, label="Tile side, px (0: automatic)", precision=0)
                    tile_overlap = gr.Number(recorded.tile_overlap, label="Tile overlap, px", precision=0)
                    auto_tile = gr.Number(
                        recorded.auto_tile,
                        label="Automatic tiling above this side, px (0: never)",
                        precision=0,
                    )
                    color_fix = gr.Dropdown(COLOR_FIXES, value=recorded.color_fix, label="Colour fix")
                    detail_fix_radius = gr.Number(
                        recorded.detail_fix_radius, label="Detail fix radius, px (0: off)", precision=0
                    )
                    detail_fix_wide_radius = gr.Number(
                        recorded.detail_fix_wide_radius,
                        label="Detail fix radius where colours moved, px (0: the radius above)",
                        precision=0,
                    )
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after", format="png", height=400, elem_id="slider")
                restored = gr.Image(
                    label="Restored", format="png", interactive=False, height=240, elem_id="restored"
                )
                download = gr.File(label="Download (full-resolution PNG)", elem_id="download")
                summary = gr.Markdown(label="Summary", elem_id="summary")
        if examples:
            gr.Examples(
                [[str(example.lq_path), example.task] for example in examples],
                inputs=[image, task],
                example_labels=[f"{example.task}: {example.lq_path.name}" for example in examples],
                label="Examples: degraded test crops, one per task",
            )
        image.change(
            show_input,
            inputs=image,
            outputs=[preview, info, slider, restored, download, summary],
            api_visibility="private",
            show_progress="hidden",
        )
        for source in (task, prompt_text):
            source.change(
                lambda name, text: _prompt_line(name, tasks, text),
                inputs=[task, prompt_text],
                outputs=prompt,
                api_visibility="private",
                show_progress="hidden",
            )
        settings = [
            steps,
            cfg,
            seed,
            tile,
            tile_overlap,
            auto_tile,
            color_fix,
            detail_fix_radius,
            detail_fix_wide_radius,
        ]
        button.click(
            restore,
            inputs=[image, task, *settings, prompt_text],
            outputs=[slider, restored, download, summary],
            api_name="restore",
            api_description="Restore an image: (before, after), the restored image, the PNG, a summary.",
        )
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str, port: int, auth: tuple[str, str] | None, allowed: list[Path]):
    """Start serving ``demo`` on ``host:port`` without blocking; returns the local URL.

    No share link, no server-side rendering process, no MCP server; ``allowed`` are the only files outside
    Gradio's own cache that the page may serve (the examples).
    """
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=auth,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        allowed_paths=[str(path) for path in allowed],
        footer_links=["api"],
    )
    return url
