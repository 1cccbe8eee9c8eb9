"""DVC stage ``stage1a``: pre-train DAFF with everything else frozen (eq. 9)."""

from stages import run_stage, write_untrained_outs
from unildiff import paths
from unildiff.params import load_section, read_params

CHECKPOINTS = paths.checkpoints("stage1a")
LIVE = paths.live("stage1a")


def main() -> None:
    from unildiff.models.config import DAFFConfig
    from unildiff.start import StartConfig
    from unildiff.training.config import Stage1aConfig, TrainConfig
    from unildiff.training.launch import relaunch_with_accelerate

    params = read_params()
    train_config = load_section("train", TrainConfig, params)
    config = load_section("stage1a", Stage1aConfig, params)
    start = load_section("start", StartConfig, params)
    daff_config = load_section("daff", DAFFConfig, params)
    if relaunch_with_accelerate(train_config, "stages.stage1a"):
        return
    from unildiff.models.daff import DAFF
    from unildiff.models.lq_encoder import LQEncoder
    from unildiff.models.prior import load_prior
    from unildiff.training.digest import digest_directory
    from unildiff.training.latent_shards import ShardedLatentCache
    from unildiff.training.loop import make_accelerator
    from unildiff.training.sharding import full_weight_modules
    from unildiff.training.stage1 import train_stage1a
    from unildiff.utils.atomic import atomic_dir

    accelerator = make_accelerator(train_config)
    prior = load_prior(paths.PRIOR)
    cache = ShardedLatentCache(paths.LATENT_CACHE)
    lq_encoder = LQEncoder.from_vae(prior.vae, num_scales=daff_config.lq_scales)
    daff = DAFF.from_unet(prior.unet, daff_config, lq_encoder.scale_channels, seed=train_config.seed)
    if not daff_config.fusion:  # the ablation without DAFF: nothing to pre-train
        with atomic_dir(paths.STAGE1A) as temporary:
            daff.save_pretrained(temporary / "daff", safe_serialization=True)
        write_untrained_outs(
            CHECKPOINTS, (LIVE,), {"trained": False, "reason": "daff.fusion=false", "step": 0}
        )
        print("stage1a: daff.fusion=false (ablation without DAFF), nothing trained")
        return
    inputs_key = digest_directory(paths.PRIOR) + digest_directory(paths.LATENT_CACHE)
    result = train_stage1a(
        prior, lq_encoder, daff, cache, config, start, train_config, CHECKPOINTS, LIVE, accelerator,
        inputs_key,
    )
    trained = full_weight_modules(accelerator, {"daff": daff})  # every process: FSDP gathers
    if accelerator.is_main_process:
        with atomic_dir(paths.STAGE1A) as temporary:
            trained["daff"].save_pretrained(temporary / "daff", safe_serialization=True)
        print(
            f"stage1a: {result.steps} steps, {result.iterations_per_second:.2f} it/s, "
            f"loss {result.final_loss:.4f}, peak RSS {result.peak_memory_mib:.0f} MiB"
        )


if __name__ == "__main__":
    run_stage(main)
