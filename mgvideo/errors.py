"""The project's exceptions. Every message names the file and line, or the config field, that is wrong."""


class MgvideoError(Exception):
    """Base class: the CLI prints these as one clean line and exits with status 2."""


class ConfigError(MgvideoError, ValueError):
    """A config value or command-line flag is invalid; the message names the field."""


class ScheduleError(ConfigError):
    """The multigrid schedule cannot be built from the given inputs."""


class AnnotationError(MgvideoError, ValueError):
    """A malformed annotation row or unknown label; the message names file and line."""


class VideoDecodeError(MgvideoError, RuntimeError):
    """A video is missing, empty, truncated, corrupt or shorter than the clip; names the file."""


class CheckpointError(MgvideoError, RuntimeError):
    """A checkpoint is unreadable, of the wrong architecture, or from a different run."""


class CacheError(MgvideoError, RuntimeError):
    """The frame cache cannot be written or read (a full disk, a bad directory); names the directory and
    carries the I/O error. Not an OSError, so that a dataset never mistakes it for a bad video."""
