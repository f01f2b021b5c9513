"""The real server against hostile clients and signals (issue 15): forged log lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

from conftest import wait_for
from stress.httpraw import build, exchange

ROOT = Path(__file__).resolve().parent.parent
DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"


def access_lines(server, marker: str) -> List[str]:
    return [line for line in server.output().splitlines() if marker in line]


# Access log (item 14) ###############################################################################


def test_control_characters_cannot_forge_access_log_lines(run_server, packages):
    server = run_server("--packages", str(packages), "--watch", "off")
    forged = "/zz%0D%0A1.2.3.4%20-%20%22GET%20/forged%20HTTP/1.1%22%20200"
    assert exchange(server.port, build("GET", forged, {}))[0] == 404
    # waitress refuses raw bytes over 127 in a request line, takes percent-encoded ones and raw ASCII controls.
    raw = b"GET /caf%C3%A9%FF%7F%5C%22?q=\x1b[31mred&ds_sn=SECRET%0A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert exchange(server.port, raw)[0] == 404
    assert wait_for(lambda: access_lines(server, "red"), timeout=5)

    lines = access_lines(server, "forged")
    assert len(lines) == 1 and "/zz\\x0d\\x0a1.2.3.4 - \\\"GET /forged HTTP/1.1\\\" 200" in lines[0]
    output = server.output()
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", output)  # nothing a terminal would act on
    [line] = access_lines(server, "red")
    # UTF-8 read as such, a byte that is not UTF-8 as \xNN, quote and backslash escaped; the serial masked
    assert '"GET /café\\xff\\x7f\\\\\\"?q=\\x1b[31mred&ds_sn=***" 404' in line, line
    assert "SECRET" not in output
