"""A byte-level CLIP tokenizer built locally (no download) for the ``tiny`` prior.

The vocabulary holds the 256 printable stand-ins for bytes (GPT-2's ``bytes_to_unicode``), their
end-of-word ``</w>`` forms and CLIP's ``<|startoftext|>``/``<|endoftext|>``; there are no merges, so every
word is spelled byte by byte. This gives the ``tiny`` prior exactly SDXL's ``tokenizer``/``tokenizer_2``
components, with distinct token ids for distinct prompts.
"""

from __future__ import annotations

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """Map each byte to a printable unicode character (the table used by GPT-2 and CLIP)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, [chr(point) for point in code_points], strict=True))


def byte_level_vocab() -> dict[str, int]:
    """The tiny vocabulary: 256 byte characters, their ``</w>`` forms, then BOS and EOS (514 tokens)."""
    characters = list(bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def build_byte_level_tokenizer(max_length: int) -> CLIPTokenizer:
    """Build a CLIP tokenizer over :func:`byte_level_vocab` padding/truncating to ``max_length`` tokens."""
    return CLIPTokenizer(
        vocab=byte_level_vocab(),
        merges=[],
        model_max_length=max_length,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )
