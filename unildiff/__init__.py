"""UniLDiff: all-in-one image restoration with latent-diffusion priors."""

__version__ = "0.1.0"
