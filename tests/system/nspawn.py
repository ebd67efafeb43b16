"""Boot a real systemd in a throwaway container: the host's root through an overlay, under systemd-nspawn.

Nothing on the host changes: the overlay's upper layer is a tmpfs that is unmounted at the end. The host's enabled
units are masked inside, so the container boots only what a test installs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def cannot_boot_reason() -> str | None:
    """Why this machine cannot boot a container, or ``None`` when it can (root, nspawn, overlayfs)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (Debian package systemd-container)"
    if not Path("/lib/systemd/systemd").exists() and not Path("/usr/lib/systemd/systemd").exists():
        return "no systemd on this machine's root to boot"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    return None


class Container:
    def __init__(self, base: Path, binds: dict[str, str]) -> None:
        self.base, self.binds = base, binds
        self.merged = base / "merged"
        self.log = base / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self._mounted: list[Path] = []

    def _mount(self, *args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        self._mounted.append(target)

    def boot(self, timeout: float = 60) -> "Container":
        layers = self.base / "layers"
        layers.mkdir(parents=True, exist_ok=True)
        self.merged.mkdir(exist_ok=True)
        self._mount("-t", "tmpfs", "tmpfs", target=layers)
        (layers / "upper").mkdir()
        (layers / "work").mkdir()
        self._mount("-t", "overlay", "overlay", "-o",
                    f"lowerdir=/,upperdir={layers}/upper,workdir={layers}/work", target=self.merged)
        enabled = subprocess.run(["systemctl", "list-unit-files", "--state=enabled", "--no-legend"],
                                 capture_output=True, text=True).stdout.split()
        mask_dir = self.merged / "etc/systemd/system"
        for unit in [u for u in enabled if "." in u and u != "enabled"] + ["console-getty.service"]:
            target = mask_dir / unit
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to("/dev/null")
        binds = [f"--bind-ro={src}:{dst}" for src, dst in self.binds.items()]
        self.proc = subprocess.Popen(["systemd-nspawn", "-D", str(self.merged), "--register=no", "--keep-unit",
                                      "-q", *binds, "-b"], stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.leader = self._find_leader()
            if self.leader:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"container did not boot: {self.log.read_text(errors='replace')[-2000:]}")

    def _find_leader(self) -> int:
        assert self.proc is not None
        children = {self.proc.pid}
        for _ in range(3):  # nspawn -> its helper -> the container's PID 1
            found = set()
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(stat[1]) in children:
                        found.add(int(pid))
            for pid in found:
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
                except OSError:
                    pass
            children = found
        return 0

    def run(self, *cmd: str, check: bool = True, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", *cmd], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        return proc

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for target in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        if not any(os.path.ismount(t) for t in self._mounted):  # never delete through a live overlay
            shutil.rmtree(self.base, ignore_errors=True)
