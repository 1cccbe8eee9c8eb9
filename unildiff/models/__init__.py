"""The UniLDiff network: prior presets, LQ encoder, DAFF, denoiser, DAEM decoder (see docs/model.md)."""
