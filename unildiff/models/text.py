"""SDXL prompt encoding and micro-conditioning (time ids) for both presets."""

from __future__ import annotations

import torch

from unildiff.models.prior import PriorComponents


def _token_ids(tokenizer, prompts: list[str], device: torch.device) -> torch.Tensor:
    tokens = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return tokens.input_ids.to(device)


@torch.no_grad()
def encode_prompt(prior: PriorComponents, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts the SDXL way (text encoders are frozen; no gradient).

    The penultimate hidden states of ``text_encoder`` and ``text_encoder_2`` are concatenated along the
    feature axis; the pooled embedding is ``text_encoder_2``'s projected EOS embedding. An empty prompt is
    encoded like any other string (SDXL's ``force_zeros_for_empty_prompt`` is the caller's choice).

    Args:
        prior: The prior holding both tokenizers and text encoders.
        prompts: B prompts (task prompts such as "remove rain", or captions).

    Returns:
        prompt_embeds (B, L, D1 + D2) and pooled (B, Dp), float32 on the text encoders' device.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    device = prior.text_encoder.device
    output_1 = prior.text_encoder(_token_ids(prior.tokenizer, prompts, device), output_hidden_states=True)
    output_2 = prior.text_encoder_2(_token_ids(prior.tokenizer_2, prompts, device), output_hidden_states=True)
    prompt_embeds = torch.cat([output_1.hidden_states[-2], output_2.hidden_states[-2]], dim=-1)
    return prompt_embeds.float(), output_2.text_embeds.float()


def make_time_ids(height: int, width: int, batch_size: int) -> torch.Tensor:
    """SDXL's micro-conditioning ``(original_h, original_w, crop_top, crop_left, target_h, target_w)``.

    Restoration never crops inside the model, so the original and target sizes are the image size and the
    crop offsets are 0.

    Returns:
        time ids, float32 (batch_size, 6).
    """
    row = torch.tensor([height, width, 0, 0, height, width], dtype=torch.float32)
    return row.unsqueeze(0).repeat(batch_size, 1)
