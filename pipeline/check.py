"""Stage: which files of a workspace are damaged, and what repairs each. The store gets SQLite's integrity
check; derived files (search index, vector snapshots, embedding cache) are opened as the commands open them."""

from __future__ import annotations

from dataclasses import dataclass

from shoptag.core.errors import Corrupt
from shoptag.core.settings import Settings
from shoptag.store.backup import integrity
from shoptag.vectors.faiss_index import VectorIndex

from .workspace import Workspace

REINDEX = "`shoptag reindex` rebuilds it from the store"


@dataclass
class FileState:
    path: str
    state: str  # "ok", or what is wrong
    repair: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def check_workspace(settings: Settings) -> list[FileState]:
    """One line per file: the store, the embedding cache, the embedded search store and its vector snapshots."""
    ws = Workspace(settings.workspace)
    states = [FileState(str(ws.db_path), integrity(ws.db_path) if ws.db_path.is_file() else "missing",
                        "`shoptag restore BACKUP` (a file made by `shoptag backup`)")]
    if ws.cache_path.is_file():
        states.append(FileState(str(ws.cache_path), integrity(ws.cache_path),
                                "none: the next run sets it aside and encodes again"))
    search = ws.search_dir / "search.sqlite"
    if search.is_file():
        states.append(FileState(str(search), integrity(search), REINDEX))
    for snapshot in sorted(ws.search_dir.glob("*.faiss")):
        try:
            VectorIndex.load(snapshot)
            state = "ok"
        except Corrupt as exc:
            state = str(exc).removeprefix(f"{snapshot}: ")
        states.append(FileState(str(snapshot), state, REINDEX))
    return states
