"""Optuna search over the method's hyper-parameters (placeholder until implemented)."""


def register_cli(sub) -> None:
    """Add the search sub-commands to the CLI."""
