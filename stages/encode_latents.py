"""DVC stage ``encode_latents``: encode the clean train crops once with the frozen prior VAE, streamed
into shards on disk (``unildiff.training.latent_shards``)."""

from stages import run_stage
from unildiff import paths
from unildiff.params import load_section


def main() -> None:
    import time

    from unildiff.data.dataset import PairedImageDataset
    from unildiff.models.prior import load_prior
    from unildiff.training.config import TrainConfig
    from unildiff.training.latent_shards import ShardedLatentCache, encode_dataset, write_latent_shards
    from unildiff.training.loop import make_accelerator

    train_config = load_section("train", TrainConfig)
    device = make_accelerator(train_config).device
    vae = load_prior(paths.PRIOR).vae.to(device)
    dataset = PairedImageDataset(
        paths.PREPARED, "train", crop_size=train_config.cache_crop_size or None, seed=train_config.seed
    )
    started = time.perf_counter()
    batches = encode_dataset(dataset, vae, train_config.encode_batch_size, train_config.dataloader_workers)
    write_latent_shards(
        batches, paths.LATENT_CACHE, train_config.latent_shard_size, float(vae.config.scaling_factor)
    )
    cache = ShardedLatentCache(paths.LATENT_CACHE)
    print(
        f"encode_latents: {len(cache)} crops encoded on {device} in {time.perf_counter() - started:.1f} s, "
        f"{len(cache.shards)} shards -> {paths.LATENT_CACHE}"
    )


if __name__ == "__main__":
    run_stage(main)
