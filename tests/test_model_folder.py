"""The model as one folder: ``UniLDiffPipeline.save_pretrained`` / ``from_pretrained``, the recorded
settings, and the refusal of starts the model was not trained at."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.model_folder import TASKS, TINY_SAMPLING, TINY_START, build_tiny_pipeline
from unildiff import UniLDiffPipeline
from unildiff.errors import ConfigError, MissingArtifactError, UntrainedStartError
from unildiff.pipeline_unildiff import assemble_pipeline, save_model_folder

COMPONENTS = (
    "daff", "decoder", "lq_encoder", "scheduler", "text_encoder", "text_encoder_2", "tokenizer",
    "tokenizer_2", "unet", "vae",
)  # fmt: skip


def _lq(height=24, width=20, seed=2):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def loaded(tiny_model_folder):
    return UniLDiffPipeline.from_pretrained(tiny_model_folder)


def test_folder_layout_is_diffusers_with_safetensors_only(tiny_model_folder):
    index = json.loads((tiny_model_folder / "model_index.json").read_text())
    assert index["_class_name"] == "UniLDiffPipeline"
    assert sorted(
        name for name in index if not name.startswith("_") and isinstance(index[name], list)
    ) == sorted(COMPONENTS)
    assert index["start"] == {"mode": "lq", "timestep": 49, "noise": 0.0, "training_fraction": 1.0}
    assert index["tasks"] == [list(item) for item in TASKS.items()] and index["sampling"]["cfg"] == 1.0
    weights = [path.suffix for path in tiny_model_folder.rglob("*") if path.suffix in (".bin", ".pt", ".pth")]
    assert not weights  # safetensors only, nothing to unpickle
    for name in ("unet", "vae", "lq_encoder", "daff", "decoder"):
        assert (tiny_model_folder / name / "config.json").is_file()
        assert list((tiny_model_folder / name).glob("*.safetensors"))


def test_a_fresh_process_loads_the_folder(tiny_model_folder):
    """diffusers imports no module for a component: the folder must load in a process that imported
    nothing of UniLDiff but the pipeline class (as a stage or a user's script does)."""
    import subprocess
    import sys

    code = (
        "import sys; from unildiff import UniLDiffPipeline; "
        "pipe = UniLDiffPipeline.from_pretrained(sys.argv[1]); "
        "print(type(pipe.daff).__name__, pipe.start.timestep)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_folder)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == ["DAFF", "49"]


def test_save_then_load_restores_bit_for_bit(loaded, tmp_path):
    lq = _lq()
    first = loaded(lq, "remove rain", output_type="pt").images[0]
    again = UniLDiffPipeline.from_pretrained(save_model_folder(loaded, tmp_path / "copy"))
    assert torch.equal(first, again(lq, "remove rain", output_type="pt").images[0])
    assert again.sampling == loaded.sampling and again.start == loaded.start and again.tasks == loaded.tasks


def test_the_package_path_from_stage_folders_round_trips_bit_for_bit(tmp_path):
    """What the ``package`` stage does: the stage outputs + settings -> one folder -> the same pixels."""
    from unildiff.models.prior import PriorComponents, save_prior

    source = build_tiny_pipeline(seed=3)
    model = source.model
    save_prior(PriorComponents(**{**vars(model.prior), "unet": model.unet}), tmp_path / "prior")
    for name in ("lq_encoder", "daff", "unet"):
        getattr(model, name).save_pretrained(tmp_path / "stage1b" / name, safe_serialization=True)
    model.decoder.save_pretrained(tmp_path / "stage2" / "decoder", safe_serialization=True)
    assembled = assemble_pipeline(
        tmp_path / "prior", tmp_path / "stage1b", tmp_path / "stage2", TINY_SAMPLING, TINY_START, TASKS
    )
    folder = save_model_folder(assembled, tmp_path / "unildiff")
    reloaded = UniLDiffPipeline.from_pretrained(folder)
    lq = _lq(32, 40)
    expected = assembled(lq, "remove noise", output_type="pt").images[0]
    assert torch.equal(expected, reloaded(lq, "remove noise", output_type="pt").images[0])


def test_saving_again_keeps_the_model_card(loaded, tmp_path):
    folder = save_model_folder(loaded, tmp_path / "unildiff")
    (folder / "README.md").write_text("card")
    save_model_folder(loaded, folder)
    assert (folder / "README.md").read_text() == "card"
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]  # no temporary left


def test_images_of_every_input_type_keep_their_size(loaded):
    array = (np.random.default_rng(0).random((21, 19, 3)) * 255).astype(np.uint8)
    restored = loaded(Image.fromarray(array), "remove rain").images[0]
    assert isinstance(restored, Image.Image) and restored.size == (19, 21)
    as_numpy = loaded(array, "remove rain", output_type="np").images[0]
    assert as_numpy.shape == (21, 19, 3) and as_numpy.dtype == np.float32
    assert np.array_equal(np.round(as_numpy * 255).astype(np.uint8), np.asarray(restored))
    grey = loaded(array[..., 0], "", output_type="np").images[0]
    assert grey.shape == (21, 19, 3)
    with pytest.raises(ConfigError, match=r"\(H, W, 3\) or \(H, W\)"):
        loaded(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ConfigError, match="output_type"):
        loaded(array, output_type="jpeg")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 40}, r"steps=40 adds denoising steps at t = 24 after the start t = 49"),
        ({"steps": 30}, r"steps=30 with start_timestep=49 starts at t = 32.*trained at t = 49"),
        ({"start_timestep": 99}, r"start_timestep=99 starts at t = 99.*start\.timestep"),
        ({"start_noise": 1.0}, r"start_noise=1\.0: this model was trained at start noise 0\.0"),
        ({"start": "noise", "steps": 4}, r"start=noise: this model was trained only at its LQ start"),
    ],
)
def test_a_start_the_model_never_trained_at_is_refused_in_one_line(loaded, overrides, message):
    with pytest.raises(UntrainedStartError, match=message) as error:
        loaded(_lq(), "remove rain", **overrides)
    assert "\n" not in str(error.value) and "--allow-untrained-start" in str(error.value)


def test_allow_untrained_start_warns_and_runs(loaded):
    with pytest.warns(UserWarning, match="untrained start: steps=40"):
        restored = loaded(_lq(), "remove rain", steps=40, allow_untrained_start=True, output_type="pt")
    assert restored.images[0].shape == (1, 3, 24, 20)


def test_a_random_timestep_model_accepts_noise_and_sdedit_starts(tmp_path):
    from unildiff.start import StartConfig

    paper = build_tiny_pipeline(start=StartConfig())  # pure noise, trained at random timesteps
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert paper.sampler(steps=4).timesteps() == [999, 749, 499, 249]
        paper.sampler(start="lq", start_timestep=500, start_noise=1.0)  # SDEdit: trained inputs
    with pytest.raises(UntrainedStartError, match="start_noise=0.0.*fully noised latents only"):
        paper.sampler(start="lq", start_timestep=500, start_noise=0.0)


def test_recorded_settings_apply_and_overrides_are_checked(loaded):
    assert loaded.sampling == TINY_SAMPLING and loaded.start == TINY_START and loaded.tasks == TASKS
    assert loaded.sampler().timesteps() == [49]
    sampler = loaded.sampler(cfg=2.0, tile=16, tile_overlap=8)
    assert sampler.config.cfg == 2.0 and sampler.config.tile == 16 and sampler.config.steps == 20
    with pytest.raises(ConfigError, match="unknown sampling setting 'strength'"):
        loaded.sampler(strength=0.5)
    with pytest.raises(ConfigError, match="sampling.tile=20 must be 0 or a multiple of 8"):
        loaded.sampler(tile=20, tile_overlap=8)


def test_task_names_and_prompts_resolve(loaded):
    assert loaded.prompt_for("derain") == "remove rain" == loaded.prompt_for("remove rain")
    with pytest.raises(ConfigError, match=r"unknown task 'rain'.*derain \('remove rain'\)"):
        loaded.prompt_for("rain")


def test_missing_or_incomplete_folders_name_the_stage(tmp_path, tiny_model_folder):
    with pytest.raises(MissingArtifactError, match=r"dvc repro package"):
        UniLDiffPipeline.from_pretrained(tmp_path / "models" / "unildiff")
    broken = tmp_path / "broken"
    broken.mkdir()
    index = json.loads((tiny_model_folder / "model_index.json").read_text())
    del index["sampling"]
    for name in COMPONENTS:
        (broken / name).symlink_to(tiny_model_folder / name)
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="needs its recorded 'sampling' settings"):
        UniLDiffPipeline.from_pretrained(broken)


def test_the_readme_python_snippet_runs(tiny_model_folder, tmp_path, monkeypatch):
    """The README's Python example, run as written (the model path pointed at a test folder)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [
        block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "from_pretrained" in block
    ]
    assert blocks, "README.md has no Python example with from_pretrained"
    snippet = blocks[0]
    assert len(snippet.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    Image.fromarray((np.random.default_rng(1).random((30, 26, 3)) * 255).astype(np.uint8)).save("rainy.png")
    exec(compile(snippet.replace('"models/unildiff"', repr(str(tiny_model_folder))), "README.md", "exec"), {})
    assert Image.open("restored.png").size == (26, 30)
