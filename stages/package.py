"""DVC stage ``package``: the trained stage outputs and their settings → one model folder, models/unildiff/.

It records the ``sampling`` and ``start`` params and the task prompts of ``data.setting`` with the weights,
so every consumer (evaluate, export, bench, restore, the demo) restores with the settings of these weights.
A model trained without prompts (``train.prompts: false``) records no task prompts: it restores blind.
"""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.params import load_section, read_params


def main() -> None:
    from unildiff.data.config import DataConfig
    from unildiff.data.settings import get_setting
    from unildiff.pipeline import SamplingConfig
    from unildiff.pipeline_unildiff import assemble_pipeline, save_model_folder
    from unildiff.start import StartConfig
    from unildiff.training.config import TrainConfig

    params = read_params()
    sampling = load_section("sampling", SamplingConfig, params)
    start = load_section("start", StartConfig, params)
    data = load_section("data", DataConfig, params)
    setting = get_setting(data.setting, data.custom_prompt)
    prompts = load_section("train", TrainConfig, params).prompts
    tasks = {task.name: task.prompt for task in setting.train_tasks} if prompts else {}
    pipeline = assemble_pipeline(paths.PRIOR, paths.STAGE1B, paths.STAGE2, sampling, start, tasks)
    pipeline.sampler()  # refuses sampling settings that contradict the start the weights were trained at
    save_model_folder(pipeline, paths.MODEL)
    print(f"package: wrote {paths.MODEL} ({len(tasks)} tasks, start {start.mode} t = {start.timestep})")


if __name__ == "__main__":
    run_stage(main)
