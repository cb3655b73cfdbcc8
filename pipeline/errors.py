"""The one exception tree. The CLI turns any PipelineError into one line per problem and exit 2."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the user can act on. `str(e)` is the message to show."""

    exit_code = 2


class RecipeError(PipelineError):
    """A recipe is malformed. Carries every problem found, each with its path and a fix."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{where}{self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{where}{len(self.problems)} problems:\n{lines}"
        super().__init__(msg)


class SourceError(PipelineError):
    """The model source cannot be resolved (missing folder, unknown hub id, offline, ...)."""


class PassError(PipelineError):
    """A pass failed while running."""

    def __init__(self, pass_name: str, message: str):
        self.pass_name = pass_name
        super().__init__(f"{pass_name}: {message}")


class PackageError(PipelineError):
    """The output folder cannot be made Foundry Local-ready (template, files, name)."""


class OutputError(PipelineError):
    """The artifact folder cannot be written or read."""


class CacheError(PipelineError):
    """The pass cache cannot be used (unwritable folder, unknown key, bad size)."""


class LockMismatchError(PipelineError):
    """`build --locked`: the build would differ from the lock it is held to."""


class QualityGateError(PipelineError):
    """A recipe `checks:` threshold was not met: the build is rejected with its own exit code."""

    exit_code = 3
