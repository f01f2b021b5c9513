"""nginx, the real one (Debian's package; .ci/run installs it), started by a test on a loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """nginx in the foreground (daemon off), everything it writes under `prefix`, listening on `port`."""

    def __init__(self, prefix: Path, server_block: str, port: int):
        self.prefix, self.port = prefix, port
        for folder in ("temp", "logs"):
            (prefix / folder).mkdir(parents=True, exist_ok=True)
        (prefix / "spklite.conf").write_text(server_block)
        temp = "\n".join(f"    {kind}_temp_path {prefix}/temp/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root root;\n" if os.geteuid() == 0 else ""  # else workers run as nobody: tmp_path is 0700
        (prefix / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log info;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n    access_log {prefix}/logs/access.log;\n{temp}\n"
            f"    default_type application/octet-stream;\n    include {prefix}/spklite.conf;\n}}\n")
        self.argv = [str(NGINX), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                     "-e", str(prefix / "logs/error.log")]
        check = subprocess.run([*self.argv, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}"
        self.proc = subprocess.Popen([*self.argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not start:\n{self.errors()}") from None
                time.sleep(0.05)

    def errors(self) -> str:
        path = self.prefix / "logs/error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, the master removes its pid file
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
