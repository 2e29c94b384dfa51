"""The one error type the trainers raise for input a user can fix."""

from __future__ import annotations

from charter.common.datafiles import DataFileError


class TrainError(Exception):
    """Bad input found before training starts: data, model paths, tokenizer, config keys.

    The message is one line, safe to show as is; the CLI prints it without a traceback.
    """


class TrainDataError(TrainError, DataFileError):
    """A training data file that cannot be used: the file, where in it and why, on one line."""


class SettingError(TrainError):
    """A setting whose key is known but whose value is of the wrong type: `key` names it so a
    recipe can point at its line."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.key = key
        self.reason = reason
