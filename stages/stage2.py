"""DVC stage ``stage2``: tune the VAE decoder + DAEM, L1 + λ1·(1−SSIM) + λ2·L_aux (eq. 10)."""

from stages import run_stage
from unildiff import paths
from unildiff.params import load_section, read_params

CHECKPOINTS = paths.checkpoints("stage2")
LIVE = paths.live("stage2")


def main() -> None:
    from unildiff.models.config import DAEMConfig
    from unildiff.start import StartConfig
    from unildiff.training.config import Stage2Config, TrainConfig
    from unildiff.training.launch import relaunch_with_accelerate

    params = read_params()
    train_config = load_section("train", TrainConfig, params)
    config = load_section("stage2", Stage2Config, params)
    start = load_section("start", StartConfig, params)
    start_timestep = start.timestep if start.trains_lq_start else None
    daem_config = load_section("daem", DAEMConfig, params)
    if relaunch_with_accelerate(train_config, "stages.stage2"):
        return
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.models.prior import load_prior
    from unildiff.training.digest import digest_directory
    from unildiff.training.latent_shards import ShardedLatentCache
    from unildiff.training.loop import make_accelerator
    from unildiff.training.sharding import full_weight_modules
    from unildiff.training.stage2 import train_stage2
    from unildiff.utils.atomic import atomic_dir

    accelerator = make_accelerator(train_config)
    prior = load_prior(paths.PRIOR)
    cache = ShardedLatentCache(paths.LATENT_CACHE)
    decoder = DAEMDecoder.from_vae(prior.vae, daem_config, seed=train_config.seed)
    inputs_key = digest_directory(paths.PRIOR) + digest_directory(paths.LATENT_CACHE)
    stage1 = None
    if config.latent_source == "denoised":
        from unildiff.models.bundle import load_stage1_model

        stage1 = load_stage1_model(prior, paths.STAGE1B)
        inputs_key += digest_directory(paths.STAGE1B)
    result = train_stage2(
        prior,
        decoder,
        cache,
        config,
        train_config,
        CHECKPOINTS,
        LIVE,
        accelerator,
        inputs_key,
        stage1,
        start_timestep,
        start.noise,
    )
    trained = full_weight_modules(accelerator, {"decoder": decoder})  # every process: FSDP gathers
    if accelerator.is_main_process:
        with atomic_dir(paths.STAGE2) as temporary:
            trained["decoder"].save_pretrained(temporary / "decoder", safe_serialization=True)
        print(
            f"stage2: {result.steps} steps, {result.iterations_per_second:.2f} it/s, "
            f"loss {result.final_loss:.4f}, peak RSS {result.peak_memory_mib:.0f} MiB"
        )


if __name__ == "__main__":
    run_stage(main)
