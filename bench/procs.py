"""Benchmark subjects as processes of their own: start one, find its port, read its CPU."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import deque

from . import proc_stats


class Subject:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], url_of):
        self.name = name
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # stderr read all along (a full pipe would stall the subject: moto logs every request
        # there), its last lines kept for errors and for what a subject reports at exit
        self._stderr: deque[str] = deque(maxlen=500)
        self._stderr_reader = threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True)
        self._stderr_reader.start()
        self.port = None
        deadline = time.monotonic() + 60
        while self.port is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                self._stderr_reader.join(10)
                raise RuntimeError(f"{name} exited: {''.join(self._stderr)[-2000:]}")
            try:
                ready = json.loads(line)
            except ValueError:
                continue
            self.port = ready.get("port")
        if self.port is None:
            raise RuntimeError(f"{name} did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep draining
        self.url = url_of(self.port)

    def stop(self) -> str:
        """SIGTERM, then the last of its stderr."""
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr_reader.join(10)
        return "".join(self._stderr)


def wait_cpu_idle(pid: int, timeout: float = 90) -> dict:
    """/proc figures once the process has used under 5% of a CPU for a whole second."""
    last = proc_stats(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = proc_stats(pid)
        if now["cpu_seconds"] - last["cpu_seconds"] < 0.05:
            return now
        last = now
    return last
