"""DVC stage ``stage1b``: fine-tune LQ encoder, DAFF and UNet, cosine decay (eq. 9)."""

from stages import run_stage
from unildiff import paths
from unildiff.params import load_section, read_params

CHECKPOINTS = paths.checkpoints("stage1b")
LIVE = paths.live("stage1b")


def main() -> None:
    from unildiff.start import StartConfig
    from unildiff.training.config import Stage1bConfig, TrainConfig
    from unildiff.training.launch import relaunch_with_accelerate

    params = read_params()
    train_config = load_section("train", TrainConfig, params)
    config = load_section("stage1b", Stage1bConfig, params)
    start = load_section("start", StartConfig, params)
    if relaunch_with_accelerate(train_config, "stages.stage1b"):
        return
    from unildiff.errors import MissingArtifactError
    from unildiff.models.daff import DAFF
    from unildiff.models.lq_encoder import LQEncoder
    from unildiff.models.prior import load_prior
    from unildiff.training.digest import digest_directory
    from unildiff.training.latent_shards import ShardedLatentCache
    from unildiff.training.loop import make_accelerator
    from unildiff.training.sharding import full_weight_modules
    from unildiff.training.stage1 import train_stage1b
    from unildiff.utils.atomic import atomic_dir

    if not (paths.STAGE1A / "daff").is_dir():
        raise MissingArtifactError(f"{paths.STAGE1A / 'daff'} is missing; run `dvc repro stage1a`")
    accelerator = make_accelerator(train_config)
    prior = load_prior(paths.PRIOR)
    cache = ShardedLatentCache(paths.LATENT_CACHE)
    daff = DAFF.from_pretrained(paths.STAGE1A / "daff", use_safetensors=True)
    # the scales of f^LQ are stage 1a's daff.lq_scales, recorded in its DAFF's config
    lq_encoder = LQEncoder.from_vae(prior.vae, num_scales=daff.config.lq_scales)
    inputs_key = (
        digest_directory(paths.PRIOR) + digest_directory(paths.LATENT_CACHE) + digest_directory(paths.STAGE1A)
    )
    result = train_stage1b(
        prior, lq_encoder, daff, cache, config, start, train_config, CHECKPOINTS, LIVE, accelerator,
        inputs_key,
    )
    modules = {"lq_encoder": lq_encoder, "daff": daff, "unet": prior.unet}
    trained = full_weight_modules(accelerator, modules)  # every process: FSDP gathers
    if accelerator.is_main_process:
        with atomic_dir(paths.STAGE1B) as temporary:
            for name, module in trained.items():
                module.save_pretrained(temporary / name, safe_serialization=True)
        print(
            f"stage1b: {result.steps} steps, {result.iterations_per_second:.2f} it/s, "
            f"loss {result.final_loss:.4f}, peak RSS {result.peak_memory_mib:.0f} MiB"
        )


if __name__ == "__main__":
    run_stage(main)
