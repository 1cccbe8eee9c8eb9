"""A stage workspace for the sharded-training tests: the small SDXL-layout prior, a latent cache and a
params.yaml, laid out as the stages read them (``unildiff.paths``, relative to the working directory)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

CPU_FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_reshard_after_forward: true
  fsdp_auto_wrap_policy: SIZE_BASED_WRAP
  fsdp_min_num_params: {min_num_params}
  fsdp_offload_params: false
  fsdp_cpu_ram_efficient_loading: false
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_activation_checkpointing: false
num_machines: 1
num_processes: 2
mixed_precision: 'no'
machine_rank: 0
rdzv_backend: static
same_network: true
use_cpu: true
"""


def build_workspace(root: Path, pairs: int = 8, size: int = 32) -> Path:
    """``root`` with ``models/prior`` (:func:`build_sdxl_layout`), ``models/cache/latents`` (``pairs`` random
    lq/gt crops of ``size``², encoded by the prior's VAE) and the repository's ``params.yaml``."""
    from tests.test_dvc_exp_sdxl import build_sdxl_layout
    from unildiff.models.prior import load_prior
    from unildiff.training.latent_shards import EncodedBatch, write_latent_shards
    from unildiff.training.latents import encode_latents

    root.mkdir(parents=True, exist_ok=True)
    build_sdxl_layout(root / "models" / "prior")
    vae = load_prior(root / "models" / "prior").vae.eval()
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(pairs, 3, size, size, generator=generator) * 2 - 1
    lq = (gt + 0.3 * torch.randn(gt.shape, generator=generator)).clamp(-1, 1)
    prompts = ["remove noise" if index % 2 else "remove rain" for index in range(pairs)]
    batch = EncodedBatch(
        lq=lq,
        gt=gt,
        gt_latents=encode_latents(vae, gt, pairs),
        prompts=prompts,
        tasks=prompts,
        pair_ids=[str(index) for index in range(pairs)],
    )
    write_latent_shards([batch], root / "models" / "cache" / "latents", 4, float(vae.config.scaling_factor))
    (root / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    return root


def set_params(root: Path, **sections: dict) -> None:
    """Update ``root/params.yaml`` section by section (``train={"seed": 1}``)."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def write_upstream_outputs(root: Path, seed: int = 0) -> None:
    """What stages 1a and 1b deliver, untrained (seeded): ``models/stage1a/daff`` and
    ``models/stage1b/{lq_encoder,daff,unet}``, so stage 1b and stage 2 can run without them."""
    from unildiff.models.config import DAFFConfig
    from unildiff.models.daff import DAFF
    from unildiff.models.lq_encoder import LQEncoder
    from unildiff.models.prior import load_prior
    from unildiff.params import load_section, read_params

    prior = load_prior(root / "models" / "prior")
    daff_config = load_section("daff", DAFFConfig, read_params(root / "params.yaml"))
    # as stage 1a builds them (stages/stage1a.py): one f^LQ scale per daff.lq_scales
    lq_encoder = LQEncoder.from_vae(prior.vae, num_scales=daff_config.lq_scales)
    daff = DAFF.from_unet(prior.unet, daff_config, lq_encoder.scale_channels, seed=seed)
    daff.save_pretrained(root / "models" / "stage1a" / "daff", safe_serialization=True)
    for name, module in (("lq_encoder", lq_encoder), ("daff", daff), ("unet", prior.unet)):
        module.save_pretrained(root / "models" / "stage1b" / name, safe_serialization=True)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (``/proc``), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def launch_stage(root: Path, stage: str, kill_at_state: int | None = None, timeout: float = 300):
    """``python -m stages.<stage>`` in ``root`` as a user runs it (the stage re-launches itself under
    ``accelerate launch`` when ``train.accelerate_config`` is set).

    With ``kill_at_state`` k: as soon as ``checkpoints/<stage>/step-k`` exists, the stage process and every
    process it started (launcher, agent, the training processes) get SIGKILL.

    Returns:
        (exit code, stdout + stderr, time.time() of the kill or ``None``).
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    log = root / f"{stage}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", f"stages.{stage}"], cwd=root, env=environment, stdout=output,
            stderr=subprocess.STDOUT,
        )
        killed_at = None
        state = root / "checkpoints" / stage / f"step-{kill_at_state:08d}" if kill_at_state else None
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if state is not None and state.is_dir():
                victims = [process.pid, *descendants(process.pid)]
                for pid in victims:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed_at = time.time()
                _wait_gone(victims)
                break
            time.sleep(0.01)
        if process.poll() is None and killed_at is None:
            for pid in [process.pid, *descendants(process.pid)]:
                os.kill(pid, signal.SIGKILL)
        code = process.wait()
    return code, log.read_text(), killed_at


def _wait_gone(pids: list[int], timeout: float = 20) -> None:
    """Wait until none of ``pids`` runs any more (gone or a zombie); ``AssertionError`` otherwise."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {alive} survived SIGKILL")
