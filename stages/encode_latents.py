"""DVC stage ``encode_latents``: encode the clean train crops once with the frozen prior VAE."""

from pathlib import Path

from stages import run_stage
from unildiff.params import load_section

PREPARED = Path("data/prepared")
PRIOR = Path("models/prior")
OUTPUT = Path("models/cache/latents")


def main() -> None:
    import time

    from unildiff.models.prior import load_prior
    from unildiff.training.config import TrainConfig
    from unildiff.training.latents import build_latent_cache, load_training_pairs, save_latent_cache

    train_config = load_section("train", TrainConfig)
    prior = load_prior(PRIOR)
    pairs = load_training_pairs(PREPARED, train_config.cache_crop_size or None, train_config.seed)
    started = time.perf_counter()
    cache = build_latent_cache(pairs, prior.vae, train_config.encode_batch_size)
    save_latent_cache(cache, OUTPUT)
    print(f"encode_latents: {len(cache)} crops encoded in {time.perf_counter() - started:.1f} s -> {OUTPUT}")


if __name__ == "__main__":
    run_stage(main)
