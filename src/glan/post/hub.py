"""Upload an export folder to a Hugging Face dataset repository, resumably.

The repository's file list (with each file's sha256 for LFS files, its git blob id otherwise)
is compared with the folder's: only files missing or different are sent, in commits of a few
shards each, so a re-run after a failure sends only what did not arrive. The card goes last
(it names the shards), with the removal of shards an earlier, larger export left behind.
"""

from __future__ import annotations

import hashlib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from glan.errors import UserError
from glan.post.progress import Steps, begin

COMMIT_FILES = 4  # shards per commit: a failure costs at most this many re-sent
CARD = "README.md"
# Files an export writes: a stale one in the repository (from a larger earlier export) goes.
EXPORT_PATTERNS = ("train.*", "train-*-of-*.*", "dataset/*")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # git's blob id
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def already_there(path: Path, remote: Any) -> bool:
    """Does the repository hold this file's exact bytes?"""
    if remote is None or remote.size != path.stat().st_size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == _sha256(path)
    return remote.blob_id == _git_blob_id(path)


def _remote_files(api: Any, repo_id: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import EntryNotFoundError, RevisionNotFoundError

    try:
        tree = api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
        return {f.path: f for f in tree if isinstance(f, RepoFile)}
    except (EntryNotFoundError, RevisionNotFoundError):  # a new, empty repository
        return {}


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    steps: Steps | None = None,
) -> str:
    """Upload `folder` (card included) as a dataset repository; returns its URL."""
    try:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    except ImportError:
        raise UserError("--push-to-hub needs: pip install 'glan[hf]'") from None
    api = HfApi(token=token)
    local = {
        str(p.relative_to(folder)): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        remote = _remote_files(api, repo_id)
        check = begin(steps, "upload: compare with the repository", len(local), "files")
        todo = []
        for name, path in local.items():
            if not already_there(path, remote.get(name)):
                todo.append(name)
            check.done += 1
        data = [n for n in todo if n != CARD]
        sent = begin(steps, "upload", sum(local[n].stat().st_size for n in todo), "bytes")
        for i in range(0, len(data), COMMIT_FILES):
            group = data[i : i + COMMIT_FILES]
            ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(local[n])) for n in group]
            api.create_commit(
                repo_id,
                ops,
                commit_message=f"glan export: {', '.join(group)}",
                repo_type="dataset",
            )
            sent.done += sum(local[n].stat().st_size for n in group)
        stale = [
            n for n in remote if n not in local and any(fnmatch(n, p) for p in EXPORT_PATTERNS)
        ]
        last: list[Any] = [CommitOperationDelete(path_in_repo=n) for n in stale]
        if CARD in todo:
            last.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=str(local[CARD])))
        if last:
            api.create_commit(
                repo_id, last, commit_message="glan export: dataset card", repo_type="dataset"
            )
        sent.done = sent.total or 0
    except Exception as exc:  # the hub client raises many kinds; the user needs one line
        raise UserError(
            f"push to {repo_id} failed: {str(exc).splitlines()[0][:200]} "
            "(run it again: files already there are not sent again)"
        ) from None
    return str(url)
