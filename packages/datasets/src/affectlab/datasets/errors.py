"""The exception raised for data a user can fix: a bad annotation line, a missing frame, a box outside its frame."""


class DatasetError(ValueError):
    """Bad dataset input. The message names the file (and line, key or frame), the bad value and what was expected."""


class DatasetWarning(UserWarning):
    """Data that can be used but differs from what its files claim (a video shorter than its annotation says)."""
