"""The ``run`` rows of docs/ablations.md, put through DVC's own ``-S`` writer, give the params each
row of the paper's Tables 4 and 5 claims, and the stages can read them."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from unildiff.models.config import DAEMConfig, DAFFConfig
from unildiff.params import load_section, read_params
from unildiff.training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "ablations.md"

#: row name -> (DAFF fusion, DAFF variant, prompts, DAEM up blocks), as the paper's tables describe them.
EXPECTED = {
    "t4_no_fusion": (False, "both", True, (1, 2)),
    "t4_single": (True, "single", True, (1, 2)),
    "t4_double": (True, "double", True, (1, 2)),
    "t4_rsa": (True, "rsa", True, (1, 2)),
    "t5_none": (False, "both", False, ()),
    "t5_prompt": (False, "both", True, ()),
    "t5_daff": (True, "both", False, ()),
    "t5_daff_prompt": (True, "both", True, ()),
}


def _rows() -> dict[str, list[str]]:
    """``name -> -S overrides`` of each ``run NAME FUSION VARIANT PROMPTS UP_BLOCKS`` line of the doc."""
    text = DOC.read_text()
    template = re.search(
        r'-S daff\.fusion=\$2 -S daff\.variant=\$3 -S train\.prompts=\$4 -S "daem\.up_blocks=\$5"', text
    )
    assert template, "docs/ablations.md: the run() template changed; update this test"
    rows = {}
    for line in text.splitlines():
        if line.startswith("run "):
            _, name, fusion, variant, prompts, up_blocks = shlex.split(line)
            rows[name] = [
                f"daff.fusion={fusion}",
                f"daff.variant={variant}",
                f"train.prompts={prompts}",
                f"daem.up_blocks={up_blocks}",
            ]
    return rows


def test_every_table_row_sets_the_params_it_claims(tmp_path):
    from dvc.utils.hydra import apply_overrides

    rows = _rows()
    assert set(rows) == set(EXPECTED)
    for name, overrides in rows.items():
        params_file = shutil.copyfile(REPO_ROOT / "params.yaml", tmp_path / f"{name}.yaml")
        apply_overrides(params_file, overrides)
        params = read_params(params_file)
        daff = load_section("daff", DAFFConfig, params)
        train = load_section("train", TrainConfig, params)
        daem = load_section("daem", DAEMConfig, params)
        assert (daff.fusion, daff.variant, train.prompts, tuple(daem.up_blocks)) == EXPECTED[name], name
