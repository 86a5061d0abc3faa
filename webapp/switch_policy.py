"""Who may switch the server's model (the "Model" accordion and /use_model).

The model is the server's: a switch changes every user's next analysis. `--allow-model-switch`
(else $WORKBENCH_MODEL_SWITCH, else `auto`) decides:

    yes   switching allowed
    no    switching refused (the checkpoints and their cards are still shown)
    auto  allowed when only this machine can reach the server (host 127.0.0.1, localhost, ::1 and
          no share link) or when visitors must log in (--auth); refused otherwise, e.g. on a
          public Space (host 0.0.0.0, no --auth)

Pure functions; app.py makes the decision once and hands it to the Workbench.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

ENV = "WORKBENCH_MODEL_SWITCH"
MODES = ("auto", "yes", "no")
DEFAULT_MODE = "auto"
FLAG = "--allow-model-switch"


@dataclass(frozen=True)
class SwitchPolicy:
    """The decision and why, in a few words (shown to users when switching is refused)."""

    allowed: bool
    why: str

    @property
    def refusal(self) -> str:
        """One line saying that, and why, switching is off ("" when it is allowed)."""
        if self.allowed:
            return ""
        hint = f": start it with {FLAG} yes" if self.why != f"{FLAG} no" else ""
        return f"Switching models is off on this server ({self.why}){hint}"


ALLOWED = SwitchPolicy(True, "allowed")      # a Workbench made in Python: its caller decides


def is_local_host(host: str | None) -> bool:
    """Is `host` (a launch server name) reachable from this machine only? None or "" is not known
    to be local, so it is not."""
    name = (host or "").strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def decide(mode: str, host: str | None, auth: bool, shared: bool = False) -> SwitchPolicy:
    """The policy for `mode` (auto, yes, no) on a server at `host`, with a login or not, with a
    public share link or not. ValueError for an unknown mode."""
    mode = parse_mode(mode)
    if mode == "yes":
        return SwitchPolicy(True, f"{FLAG} yes")
    if mode == "no":
        return SwitchPolicy(False, f"{FLAG} no")
    if auth:
        return SwitchPolicy(True, "login required (--auth)")
    if shared:
        return SwitchPolicy(False, "public share link, no --auth")
    if is_local_host(host):
        return SwitchPolicy(True, "local server")
    return SwitchPolicy(False, "public, no --auth")


def parse_mode(raw: str | None) -> str:
    """auto, yes or no (case and spaces ignored); ValueError (one line) for anything else."""
    mode = str(raw if raw is not None else "").strip().lower()
    if mode not in MODES:
        raise ValueError(f"model switch {str(raw)[:20]!r} is not one of {', '.join(MODES)}")
    return mode


def mode_from_env(flag: str | None = None) -> str:
    """`flag` if given, else $WORKBENCH_MODEL_SWITCH, else auto. ValueError if bad."""
    if flag is not None:
        return parse_mode(flag)
    raw = os.environ.get(ENV, "").strip()
    try:
        return parse_mode(raw) if raw else DEFAULT_MODE
    except ValueError:
        raise ValueError(f"${ENV}={raw[:20]!r} is not one of {', '.join(MODES)}") from None
