"""Who can reach `skillgpt demo` and what it records: `--auth`, the warning for a demo bound beyond
loopback, and the one log line per request."""
from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path
from typing import Any, Optional, Sequence

MB = 1024 * 1024
DEFAULT_HOST = "127.0.0.1"  # loopback: this machine only
DEFAULT_PORT = 7860


def check_port_free(host: str, port: int) -> None:
    """OSError naming --port/--host unless a server could bind `host:port` now (port 0: any free port).
    Run before the model loads, so a busy port costs no loading time."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise OSError(f"--host {host}: not a known host name or address ({err.strerror})") from err
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as err:
            raise OSError(f"cannot serve the demo on {host}:{port}: {err.strerror or 'address unavailable'}; "
                          "pick another port with --port N (or another --host)") from err


def parse_auth(value: Optional[str]) -> Optional[tuple[str, str]]:
    """`--auth user:password` as Gradio's `auth=(user, password)`; None when not given. The password may
    contain ':' (the first one separates)."""
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth expects user:password (both non-empty), e.g. --auth coach:s3cret")
    return user, password


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to a network interface
        return False


def exposure_warnings(host: str, share: bool, auth: bool) -> list[str]:
    """Warnings to print at start-up for a demo that other machines can reach."""
    out = []
    if not is_loopback(host):
        who = "anyone who can reach this machine" if not auth else "whoever has the --auth login"
        out.append(f"warning: --host {host} serves the demo beyond this machine: {who} can upload clips and "
                   f"use the model (plain HTTP, unencrypted)"
                   + ("" if auth else "; add --auth user:password to require a login"))
    if share:
        out.append("warning: --share makes the demo reachable by anyone with the public link"
                   + ("" if auth else "; add --auth user:password to require a login"))
    return out


def describe_files(paths: Sequence[Optional[str]]) -> str:
    """'clip.mp4 (1.2 MB), photo.png (0.1 MB)' for the given uploads ('-' when none)."""
    parts = []
    for path in paths:
        if path:
            p = Path(path)
            size = f"{p.stat().st_size / MB:.1f} MB" if p.is_file() else "missing"
            parts.append(f"{p.name} ({size})")
    return ", ".join(parts) or "-"


def request_line(action: str, request: Any, files: Sequence[Optional[str]], started: float, outcome: str,
                 detail: str = "") -> str:
    """One log line for a finished request: UTC time, action, client address, user, files, extra
    detail, seconds taken and the outcome (`ok`, `error: ...`, `cancelled`)."""
    client = getattr(getattr(request, "client", None), "host", None) or "-"
    user = getattr(request, "username", None) or "-"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    extra = f" {detail}" if detail else ""
    return (f"[demo] {when} {action} client={client} user={user} files={describe_files(files)}{extra} "
            f"{time.monotonic() - started:.2f}s {outcome}")
