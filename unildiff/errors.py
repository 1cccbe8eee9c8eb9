"""Error types. Each carries one concise line that names the offending param, file or stage."""


class UniLDiffError(Exception):
    """Base class for every error the CLI and the stages report as ``error: <message>``."""


class ConfigError(UniLDiffError, ValueError):
    """A parameter is missing, unknown or out of range. The message names the param."""


class DataError(UniLDiffError):
    """A dataset, image or manifest is unusable. The message names the file or folder."""


class MissingArtifactError(UniLDiffError, FileNotFoundError):
    """Weights or other stage outputs are absent. The message names the DVC stage to run."""


class BackendUnavailableError(UniLDiffError, RuntimeError):
    """A runtime (CUDA, TensorRT, onnxruntime-gpu) is not installed or not usable here."""


class UntrainedStartError(ConfigError):
    """A sampling request starts where the model never trained (another start timestep, noise or
    steps). The message names the setting; ``--allow-untrained-start`` overrides it."""
