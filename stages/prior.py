"""DVC stage ``prior``: train the tiny VAE + UNet (preset ``tiny``) or link a local SDXL (``sdxl``)."""

import dataclasses

from stages import run_stage, write_untrained_outs
from unildiff import paths
from unildiff.params import load_section, read_params

CHECKPOINTS = paths.checkpoints("prior")
LIVE = paths.live("prior")
ROUND_TRIP = LIVE / "round_trip.json"


def main() -> None:
    from unildiff.models.config import PriorConfig
    from unildiff.training.config import PriorTrainConfig, TrainConfig
    from unildiff.training.launch import relaunch_with_accelerate

    params = read_params()
    prior_config = load_section("prior", PriorConfig, params)
    train_config = load_section("train", TrainConfig, params)
    config = load_section("prior_train", PriorTrainConfig, params)
    # the prior's own seed (prior_train.seed) in place of train.seed, which seeds stages 1a-2
    train_config = dataclasses.replace(train_config, seed=config.seed)
    if prior_config.preset == "sdxl":
        from unildiff.training.sdxl import link_sdxl_prior

        link_sdxl_prior(prior_config.sdxl_path, paths.PRIOR)
        from unildiff.utils.atomic import atomic_write_json

        record = {"preset": "sdxl", "trained": False, "step": 0}
        write_untrained_outs(CHECKPOINTS, (LIVE / "vae", LIVE / "unet"), record)
        atomic_write_json(ROUND_TRIP, {"preset": "sdxl", "trained": False})
        print(f"prior: linked {prior_config.sdxl_path} -> {paths.PRIOR}")
        return
    if relaunch_with_accelerate(train_config, "stages.prior"):
        return
    from unildiff.models.prior import build_tiny_prior, save_prior
    from unildiff.training.latents import load_split_images, load_training_pairs
    from unildiff.training.loop import make_accelerator
    from unildiff.training.prior import train_tiny_prior

    accelerator = make_accelerator(train_config)
    prior = build_tiny_prior(prior_config, seed=train_config.seed)
    pairs = load_training_pairs(paths.PREPARED, train_config.cache_crop_size or None, train_config.seed)
    results = train_tiny_prior(prior, pairs, config, train_config, CHECKPOINTS, LIVE, accelerator)
    if accelerator.is_main_process:
        from unildiff.training.prior import round_trip_psnr
        from unildiff.utils.atomic import atomic_write_json

        save_prior(prior, paths.PRIOR)
        val = load_split_images(paths.PREPARED, "val")
        scores = {"train": round_trip_psnr(prior.vae, pairs.gt, train_config.encode_batch_size)}
        if val is not None:
            scores["val"] = round_trip_psnr(prior.vae, val, train_config.encode_batch_size)
        atomic_write_json(ROUND_TRIP, {"vae_round_trip_psnr": scores})
        print(f"prior: VAE round trip PSNR {scores}")
        for result in results:
            print(
                f"{result.stage}: {result.steps} steps, {result.iterations_per_second:.2f} it/s, "
                f"loss {result.final_loss:.4f}, peak RSS {result.peak_memory_mib:.0f} MiB"
            )


if __name__ == "__main__":
    run_stage(main)
