"""Which base checkpoint an agent was trained on, and whether a given file holds it.

An agent stores `base_content`, the base model's content digest
(`infinito.checkpoint.content_digest`): the same model in another file — copied,
re-saved, or written by an identical run — is accepted, another model is refused.
"""
from __future__ import annotations

from pathlib import Path

from infinito.checkpoint import BASE_KIND, content_digest, load_checkpoint

from .cli import UserError



def identify(path: str | Path) -> str:
    """The identity to store in a new agent's checkpoint (RunRecord.base_content)."""
    return content_digest(load_checkpoint(path, kind=BASE_KIND))


def holds_base(path: str | Path, content: str) -> bool:
    return content_digest(load_checkpoint(path, kind=BASE_KIND)) == content


def check_base(path: str | Path, record, agent: str, flag: str) -> Path:
    """`path` if it holds the base model `agent` (its RunRecord) was trained on; otherwise one line
    saying to pass the right one with `flag`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}, the base checkpoint of {agent}, does not exist; pass its location with {flag}")
    if not holds_base(path, record.base_content):
        raise UserError(f"{path} is not the base checkpoint of {agent} ({record.base}): it holds another "
                        f"model; pass that one with {flag}")
    return path
