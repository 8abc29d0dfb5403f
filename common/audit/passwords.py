"""Weak and default passwords among the pages' users, found by trying them against the stored scrypt hashes.

Only hashes are stored, so a weak password is found the way an attacker would: by trying the usual ones.
The list is short on purpose (each try costs one scrypt, tens of ms on a Pi): the defaults of devices and
tutorials, the user's own name, the school's and gateway's ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from edugate.common.web.auth import SCRYPT_N, User, verify_password

COMMON = ("admin", "admin123", "admin1234", "administrator", "password", "password1", "password123", "Password1",
          "P@ssw0rd", "passw0rd", "12345678", "123456789", "1234567890", "11111111", "00000000", "88888888",
          "123123123", "abc12345", "qwerty123", "qwertyuiop", "iloveyou", "letmein1", "changeme", "welcome1",
          "raspberry", "edugate", "edugate1", "edugate123", "school123", "matkhau", "matkhau123", "123456a@")


def candidates(user: str, extra: Iterable[str] = ()) -> list[str]:
    """The passwords tried for ``user``: :data:`COMMON`, the name itself in a few forms, and ``extra`` (the
    school's and gateway's ids and the like) in the same forms."""
    words = [user, *extra]
    tried = [*COMMON]
    for word in words:
        tried += [word, word + "123", word + "1234", word + "2026", word * 2, word.capitalize() + "123"]
    return list(dict.fromkeys(t for t in tried if t))


def weak_users(users: Iterable[User], extra: Iterable[str] = (), min_n: int = SCRYPT_N) -> dict[str, str]:
    """User name -> why (a guessable password: which kind, never the password; or a hash with a scrypt cost
    below ``min_n``) for each weak one."""
    extra = list(extra)
    found: dict[str, str] = {}
    for user in users:
        for i, guess in enumerate(candidates(user.name, extra)):
            if verify_password(guess, user.password_hash):
                found[user.name] = ("a common default password" if i < len(COMMON)
                                    else "a password made of its own name or the school's/gateway's id")
                break
        else:
            n = _cost(user.password_hash)
            if n is not None and n < min_n:
                found[user.name] = f"a password hash cheaper to guess than EduGate's (scrypt n={n} < {min_n})"
    return found


def _cost(stored: str) -> int | None:
    try:
        return int(stored.split("$")[1])
    except (IndexError, ValueError):
        return None
