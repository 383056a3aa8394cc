"""Who can connect to a Unix socket: the mode bits of every directory on the way and of the socket.

Connecting needs search (x) permission on each directory from / down and write permission on the
socket file. This reads the bits the way the kernel applies them to a user (owner, else one of the
user's groups, else other; root passes), so `check` can say which members of the socket group
can connect, and through which directory the others are stopped. ACLs and security modules are
not read.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Member", "blocked_at", "group_members"]


@dataclass(frozen=True)
class Member:
    """A user as the kernel sees them for file access."""

    name: str
    uid: int
    gids: frozenset[int]


def group_members(gid: int) -> list[Member]:
    """Users whose primary or supplementary group is `gid`, sorted by name."""
    names = set(grp.getgrgid(gid).gr_mem)
    names.update(user.pw_name for user in pwd.getpwall() if user.pw_gid == gid)
    members = []
    for name in sorted(names):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        members.append(Member(name, user.pw_uid, frozenset(os.getgrouplist(name, user.pw_gid))))
    return members


def _allows(member: Member, info: os.stat_result, bit: int) -> bool:
    """Whether the owner/group/other bit `bit` (the owner's: S_IXUSR or S_IWUSR) lets them pass."""
    if member.uid == 0:
        return True
    if member.uid == info.st_uid:
        return bool(info.st_mode & bit)
    if info.st_gid in member.gids:
        return bool(info.st_mode & (bit >> 3))
    return bool(info.st_mode & (bit >> 6))


def blocked_at(
    member: Member, socket_path: Path, socket_info: os.stat_result | None = None
) -> str | None:
    """None when `member` can connect; else the path that stops them and why.

    `socket_info` stands for a socket not bound yet (the mode and owner it will get)."""
    directory = Path("/")
    for part in socket_path.parent.parts[1:]:
        directory = directory / part
        try:
            info = directory.stat()
        except OSError:
            return f"{directory} does not exist"
        if not _allows(member, info, stat.S_IXUSR):
            return f"{directory} is mode {stat.S_IMODE(info.st_mode):04o}"
    if socket_info is None:
        socket_info = socket_path.stat()
    if not _allows(member, socket_info, stat.S_IWUSR):
        return f"{socket_path} is mode {stat.S_IMODE(socket_info.st_mode):04o}"
    return None
