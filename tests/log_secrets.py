"""The end-of-run check that no secret reached a server log (issue G).

Every server the fixtures start logs to its ``server.log``; every key they create is recorded
(``conftest.record_secret``). After the run, each log is searched for each recorded secret and for
anything shaped like the secrets this service issues or accepts (API keys, single-use tokens,
Standard Webhooks secrets, JWTs), so that tokens minted over HTTP inside a test count too. A leak
fails the run, naming the log, the line and the secret (shortened: a report is itself a log).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

SHAPES = re.compile(
    r"kk-[A-Za-z0-9_-]{20,}|sutkn_[A-Za-z0-9_-]{20,}|whsec_[A-Za-z0-9+/=]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
)
# `lectern serve` prints the development key it creates once, by design (test_cli checks it).
DEV_KEY_NOTICE = "It is shown only this once"


@dataclass(frozen=True)
class Leak:
    log: Path
    line: int
    secret: str

    def __str__(self) -> str:
        return f"{self.log}:{self.line}: {shown(self.secret)}"


def shown(secret: str) -> str:
    return f"{secret[:6]}... ({len(secret)} characters)"


def _announced_dev_keys(lines: list[str]) -> set[str]:
    keys: set[str] = set()
    for number, line in enumerate(lines):
        if DEV_KEY_NOTICE in line:
            for following in lines[number + 1:number + 4]:
                keys.update(re.findall(r"kk-[A-Za-z0-9_-]+", following))
    return keys


def leaks_in(logs: Iterable[Path], secrets: Iterable[str]) -> list[Leak]:
    secrets = [s for s in secrets if s]
    leaks = []
    for log in sorted(logs):
        if not log.exists():
            continue
        text = log.read_text(errors="replace")
        present = [s for s in secrets if s in text]
        if not present and not SHAPES.search(text):
            continue
        lines = text.splitlines()
        allowed = _announced_dev_keys(lines)
        for number, line in enumerate(lines, 1):
            found = {s for s in present if s in line} | set(SHAPES.findall(line))
            leaks += [Leak(log, number, secret) for secret in sorted(found - allowed)]
    return leaks


def report_leaks(config: pytest.Config, logs: Iterable[Path], secrets: Iterable[str]) -> bool:
    """Report every secret found in ``logs``; True if there was any."""
    leaks = leaks_in(logs, secrets)
    if leaks:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"{len(leaks)} secret(s) found in server logs:", *map(str, leaks)]
        if reporter is not None:
            reporter.section("secrets in server logs", sep="=", red=True)
            for line in lines:
                reporter.line(line, red=True)
        else:
            print("\n".join(lines))
    return bool(leaks)
