"""The two kinds of error a user can cause, each reported as one clear line."""


class UsageError(Exception):
    """Bad command-line usage: unknown primitive/backend, bad size, unwritable directory.

    The CLI prints the message on one line and exits with status 2.
    """


class InputError(ValueError):
    """Bad input arrays: wrong dtype, shape, layout, NaN, empty, too large for a device.

    Raised in Python before any backend sees the data, so no backend ever gets a
    float64 array it would read as float32 or a pointer past the end of a buffer.
    """
