"""Secrets handed to resources: by the variable's name or by the file's path, never by value.

A secret read from the environment reaches a resource as `EnvVar(NAME)`; one read from
`NAME_FILE` (the Docker and Kubernetes convention) as the file's path, read again by
whichever process uses it. Either way the run config Dagster stores and shows holds a name
or a path, and nothing is put into the environment that the processes Dagster starts
inherit (a child that saw both `NAME` and `NAME_FILE` would refuse to start).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

MAX_SECRET_FILE_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message names the file and what is wrong."""


def read_secret_file(path: str) -> str:
    """The secret in `path`: at most 64 KiB of UTF-8, one trailing newline stripped (editors and `echo` add it)."""
    try:
        with open(path, "rb") as file:
            content = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"cannot read {path!r}: {exc.strerror}") from None
    if len(content) > MAX_SECRET_FILE_BYTES:
        raise SecretFileError(f"{path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        value = content.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{path!r} is not UTF-8 text") from None
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretFileError(f"{path!r} is empty")
    return value


class Secret(dg.Config):
    """One secret of a resource: its `value` (an EnvVar in deployments), or the `file` that holds it."""

    value: str | None = Field(default=None, repr=False, description="The secret, or EnvVar(NAME).")
    file: str | None = Field(default=None, description="A file holding the secret (NAME_FILE).")

    def reveal(self) -> str | None:
        """The secret itself (read from its file now, in the process that uses it), or None if unset."""
        return read_secret_file(self.file) if self.file is not None else self.value
