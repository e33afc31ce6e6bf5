"""Files and folders another user of this machine could have put there, or could change.

``moa`` reads files that decide what it does (a config, a call cache, a chat thread store, the
journal a batch run resumes from) and writes files of its own (outputs, journals, caches, lock
files) in folders that users share: a team's folder, ``/tmp``. Another user who could write such
a file, or replace it in its folder, could choose where your prompts and keys go, change the
answers a cache gives back, or plant a link that makes ``moa`` write into another of your files.
So before a command reads or writes one, its path is looked at from the root down, both as given
(a link on the way is an entry of its own, with its own owner) and where it leads
(``exposure``):

- a file every user may write (``chmod o+w``) is refused;
- a folder every user may write without the sticky bit (``chmod 777``) is refused: anyone may
  replace what it holds;
- in a folder every user may write with the sticky bit (``/tmp``, ``chmod 1777``) anyone may
  create an entry, and replace only their own: an entry of another user there (neither yours
  nor root's) may have been planted, and is refused; so is a file there with another name (a
  hard link, which may be one to a file of yours: its owner says nothing);
- group-writable files and folders are a team's (a team's config, a teammate resuming a run),
  and used; so is another user's file in a folder only its owner and group may write: someone
  of the team put it there.

Where modes mean nothing (WSL's ``/mnt/c``, FAT and CIFS mounts show every file and folder as
0777, and chmod changes nothing), the user may turn these checks off in their environment
(``MOA_ALLOW_SHARED_FILES=1``), which a config cannot set. Whatever it says, files ``moa``
creates for itself are opened without following a link (``O_NOFOLLOW``, ``O_EXCL``), and a file
it rewrites whole takes the owner, group and mode of the one it replaces only from one these
rules trust (``may_inherit``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from langgraph_moa.nodes.errors import SharedFileError

SHARED_FILES_ENV = "MOA_ALLOW_SHARED_FILES"  # "1": use files other users may write all the same
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open() of a link fails (ELOOP); Windows has no such flag
ROOT_UID = 0  # root can change every file anyway: its files are trusted like the user's own
# What a planted link or journal could do with a file moa keeps for itself (a run's output,
# journal, work folder or lock; a report folder).
OWN_FILES_RISK = (
    "make moa write into another of your files (a link) or resume from records you did not write"
)


def allowed() -> bool:
    """Whether the user allows files other users may write (only ``=1`` does)."""
    return os.environ.get(SHARED_FILES_ENV) == "1"


def everyone_can_write(st: os.stat_result) -> bool:
    """Whether every user of this machine may change the file ``st`` describes (POSIX ``o+w``
    on a regular file; a pipe passes, and Windows has no such bit), unless the user allowed such
    files (``MOA_ALLOW_SHARED_FILES=1``)."""
    shared = os.name == "posix" and stat.S_ISREG(st.st_mode) and bool(st.st_mode & stat.S_IWOTH)
    return shared and not allowed()


def open_to_all(risk: str, st: os.stat_result, name: str = "it") -> str:
    """Why a file every user may write is refused: ``risk``, what a stranger could do with it."""
    return (
        f"every user of this machine can change {name} (mode {stat.S_IMODE(st.st_mode):04o}), so "
        f"anyone could {risk}"
    )


def make_it_yours(path: object, other: str = "") -> str:
    """What to do with a file every user may write: chmod, ``other`` choices (", or ..."), or,
    where chmod changes nothing, allow such files."""
    return (
        f"make it yours alone (chmod o-w {path}){other}; where chmod changes nothing (WSL's "
        f"/mnt/c, FAT, CIFS), set {SHARED_FILES_ENV}=1 to use it all the same"
    )


def is_mine(st: os.stat_result) -> bool:
    """Whether this process's user owns what ``st`` describes (always, where there are no uids)."""
    return not hasattr(os, "geteuid") or st.st_uid == os.geteuid()


def owner_name(uid: int) -> str:
    """``name, uid N`` of a user (the uid alone when it has no name here)."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name}, uid {uid}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def belongs_to_another(st: os.stat_result) -> str:
    return f"belongs to another user ({owner_name(st.st_uid)})"


def not_yours_to_write(st: os.stat_result) -> str:
    """Why a file of another user (``st``) that this process cannot write is in the way."""
    return f"{belongs_to_another(st)} and you cannot write it (mode {stat.S_IMODE(st.st_mode):04o})"


def let_you_write(path: object) -> str:
    """What its owner can do about such a file (``not_yours_to_write``): "let you write it"."""
    return f"let you write it (chmod g+w {path}, with you in its group)"


# SQLite's files beside a database: its write-ahead log, shared memory and rollback journal;
# whoever can write them can change the database as much as whoever can write the file itself.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def sqlite_files(path: Path) -> list[Path]:
    """A SQLite database ``path`` and the files SQLite keeps beside it (there or not)."""
    return [path, *(path.with_name(path.name + c) for c in SQLITE_COMPANIONS)]


def create_new(path: Path, mode: int) -> None:
    """Create the empty file ``path`` with ``mode`` (less the umask), never through a link
    (``O_EXCL``, ``O_NOFOLLOW``); one already there (made meanwhile, or a link) is left as it is,
    to be looked at like any file that is there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
    except FileExistsError:
        return
    os.close(fd)


@dataclass(frozen=True)
class Exposure:
    """Why another user could change a path: ``kind`` is ``file`` (``path`` every user may write),
    ``folder`` (``path``, a folder on the way, every user may write, with no sticky bit),
    ``planted`` (``path`` belongs to another user and sits in ``folder``, sticky and open to all)
    or ``linked`` (``path``, a file with other names, sits in such a ``folder``).
    """

    kind: Literal["file", "folder", "planted", "linked"]
    path: Path
    st: os.stat_result
    folder: Path | None = None
    folder_st: os.stat_result | None = None


def exposure(path: str | Path, *, holds: bool = False) -> Exposure | None:
    """Why another user of this machine could have put ``path`` (a file or folder, there or not
    yet) where it is, or could change it; None when nobody but the user, root and the user's team
    could (module docstring). Looked at as given, then where its links lead. ``holds``: ``path``
    is a folder moa makes its files in, which every user may not replace either (a folder open to
    all without the sticky bit)."""
    if os.name != "posix" or allowed():
        return None
    given = Path(os.path.abspath(path))
    found = _walk(given, holds)
    real = Path(os.path.realpath(given))
    if found is None and real != given:
        found = _walk(real, holds)
    return found


def _walk(path: Path, holds: bool) -> Exposure | None:
    folder = Path(path.anchor)
    entry_st: os.stat_result | None = None
    for name in path.parts[1:]:
        entry = folder / name
        try:
            folder_st = os.stat(folder)  # where a link on the way leads
        except OSError:  # a link to nothing, a folder we cannot search: the OS will say
            return None
        try:
            entry_st = os.lstat(entry)
        except FileNotFoundError:
            entry_st = None
        except OSError:
            return None
        found = _in_folder(folder, folder_st, entry, entry_st)
        if found is not None or entry_st is None:  # not there (yet): made by whoever makes it
            return found
        folder = entry
    if entry_st is not None and everyone_can_write(entry_st):
        return Exposure("file", path, entry_st)
    if holds:  # a folder moa makes files in: as the folder of one not there yet
        try:
            return _in_folder(path, os.stat(path), path, None)
        except OSError:
            return None
    return None


def _in_folder(
    folder: Path, folder_st: os.stat_result, entry: Path, entry_st: os.stat_result | None
) -> Exposure | None:
    """Why another user could have put ``entry`` (``entry_st``; None: not there) in ``folder``,
    or could replace it there; None when nobody but the user, root and the user's team could."""
    open_folder = stat.S_ISDIR(folder_st.st_mode) and folder_st.st_mode & stat.S_IWOTH
    if open_folder and not folder_st.st_mode & stat.S_ISVTX:
        return Exposure("folder", folder, folder_st)
    if open_folder and entry_st is not None and entry_st.st_uid not in {os.geteuid(), ROOT_UID}:
        return Exposure("planted", entry, entry_st, folder, folder_st)
    if open_folder and entry_st is not None and _hard_linked(entry_st):
        return Exposure("linked", entry, entry_st, folder, folder_st)
    return None


def may_inherit(path: Path, st: os.stat_result) -> bool:
    """Whether a file moa writes whole in place of ``path`` (``st``: the file there now) may take
    its owner, group and mode: only from one these rules trust, the user's own or root's, or a
    teammate's in a folder only its owner and group may write (a team's 0640 output stays so).
    Not from one another user could have planted, or every user may change, whatever
    ``MOA_ALLOW_SHARED_FILES`` says: moa (as root, which may give files away) would hand what it
    wrote to them, and keep it writable to all."""
    if is_mine(st) or st.st_uid == ROOT_UID:
        return True
    if st.st_mode & stat.S_IWOTH:
        return False
    return _walk(Path(os.path.abspath(path)), holds=False) is None


def _hard_linked(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


def check_shared(path: str | Path, what: str, risk: str, other: str = "") -> None:
    """Refuse ``path`` (``SharedFileError``) when another user could have put it there or could
    change it (``exposure``). ``what``: how the user calls it; ``risk``: what a stranger could do
    with it ("change the answers it gives"); ``other``: other ways out (", or give another -o")."""
    _refuse(exposure(path), path, what, risk, other)


def check_folder(folder: str | Path, what: str, risk: str, other: str = "") -> None:
    """Refuse a ``folder`` moa makes its files in (as ``check_shared``): one another user could
    have put there, or one whose files every user may replace (``chmod 777``)."""
    _refuse(exposure(folder, holds=True), folder, what, risk, other)


def _refuse(found: Exposure | None, path: str | Path, what: str, risk: str, other: str) -> None:
    if found is None:
        return
    culprit = found.path
    name = "it" if culprit == Path(os.path.abspath(path)) else str(culprit)
    if found.kind == "file":
        problem = open_to_all(risk, found.st, name)
        hint = make_it_yours(culprit, other)
    elif found.kind == "folder":
        mode = stat.S_IMODE(found.st.st_mode)
        problem = (
            f"every user of this machine can change the folder {culprit} (mode {mode:04o}) and "
            f"replace what it holds, so anyone could {risk}"
        )
        hint = (
            f"make that folder yours alone (chmod o-w {culprit}), or let each user replace only "
            f"their own files there (chmod +t {culprit}){other}; where chmod changes nothing "
            f"(WSL's /mnt/c, FAT, CIFS), set {SHARED_FILES_ENV}=1 to use it all the same"
        )
    else:
        assert found.folder is not None and found.folder_st is not None
        if stat.S_ISLNK(found.st.st_mode):
            name += f" (a link to {os.readlink(culprit)})"
        if found.kind == "planted":
            whose = belongs_to_another(found.st)
            hint = f"check what it is, and have its owner or root remove it{other}"
        else:
            whose = f"is a file of {found.st.st_nlink} names (hard links)"
            hint = f"check what it is, and remove that name if it is not yours{other}"
        mode = stat.S_IMODE(found.folder_st.st_mode)
        problem = (
            f"{name} {whose} in {found.folder}, where every user may create files (mode "
            f"{mode:04o}), so whoever put it there could {risk}"
        )
    raise SharedFileError(what, str(culprit), problem, hint)
