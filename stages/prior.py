"""DVC stage ``prior``: train the tiny VAE + UNet (preset ``tiny``) or link a local SDXL (``sdxl``)."""

from pathlib import Path

from stages._params import load_section, read_params, run_stage

PREPARED = Path("data/prepared")
OUTPUT = Path("models/prior")
CHECKPOINTS = Path("checkpoints/prior")
LIVE = Path("dvclive/prior")


def main() -> None:
    from unildiff.models.config import PriorConfig
    from unildiff.training.config import PriorTrainConfig, TrainConfig
    from unildiff.training.launch import relaunch_with_accelerate

    params = read_params()
    prior_config = load_section("prior", PriorConfig, params).validate()
    train_config = load_section("train", TrainConfig, params)
    config = load_section("prior_train", PriorTrainConfig, params)
    if prior_config.preset == "sdxl":
        from unildiff.training.sdxl import link_sdxl_prior

        link_sdxl_prior(prior_config.sdxl_path, OUTPUT)
        print(f"prior: linked {prior_config.sdxl_path} -> {OUTPUT}")
        return
    if relaunch_with_accelerate(train_config, "stages.prior"):
        return
    from unildiff.models.prior import build_tiny_prior, save_prior
    from unildiff.training.latents import load_training_pairs
    from unildiff.training.loop import make_accelerator
    from unildiff.training.prior import train_tiny_prior

    accelerator = make_accelerator(train_config)
    prior = build_tiny_prior(prior_config, seed=train_config.seed)
    pairs = load_training_pairs(PREPARED, train_config.crop_size, train_config.seed)
    results = train_tiny_prior(prior, pairs, config, train_config, CHECKPOINTS, LIVE, accelerator)
    if accelerator.is_main_process:
        save_prior(prior, OUTPUT)
        for result in results:
            print(
                f"{result.stage}: {result.steps} steps, {result.iterations_per_second:.2f} it/s, "
                f"loss {result.final_loss:.4f}, peak RSS {result.peak_memory_mib:.0f} MiB"
            )


if __name__ == "__main__":
    run_stage(main)
