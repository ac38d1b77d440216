"""The one exception type the environment raises for a caller's mistake."""


class EnvError(ValueError):
    """Bad input to the environment: an invalid action, `step` before `reset`, an
    unusable base checkpoint or corpus, an invalid config value.

    The message is one line saying what is wrong and what to do. Checkpoint
    problems found while loading may also arrive as `common.files.CheckpointError`.
    """
