"""A throwaway single-node SLURM cluster on this machine, for tests: munged, slurmctld and slurmd as root, with
their configuration, state, sockets and logs in one temporary folder, on free ports; nothing outside it changes.

    python -m tests.slurm_cluster    # starts one, prints the SLURM_CONF to export, stops it on Enter

Needs Debian's `slurm-wlm` and `munge` packages (apt-get install -y slurm-wlm munge) and root (SlurmUser=root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [d for d in (*DAEMONS, "sbatch", "squeue", "scontrol") if shutil.which(d) is None
              and not Path("/usr/sbin", d).is_file()]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    if not Path("/etc/munge/munge.key").is_file():
        return "/etc/munge/munge.key is missing (the munge package creates it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """One node (this host, declared with `cpus` CPUs), one default partition `debug`, accounting off; `env` points
    clients at it.

    The node declares more CPUs than the machine has (SlurmdParameters=config_overrides: slurmd takes slurm.conf's
    word for it instead of draining the node), so that the tests' jobs, which mostly wait for SLURM, run side by
    side: one test's sweep does not queue behind another's job that waits for its time limit.

    KillWait=2: a cancelled, requeued or timed-out job gets SIGKILL 2 s after SIGTERM (a job that has not started
    training yet ignores SIGTERM: submitit bypasses it). slurmctld checks time limits every 30 s (fixed).

    SchedulerParameters=sched_interval=1: the main scheduling loop, which tests every pending job, runs every second
    (default 60 s): a submitted job, or one released by `requeue`, starts within about a second (slurmctld.log's
    submit and Allocate lines). A handful of jobs make the loop cheap."""

    def __init__(self, cpus: int = 8, memory_mb: int = 8192) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lstm_zoo_slurm_"))
        self.root.chmod(0o755)  # munged refuses a socket in a folder others cannot traverse
        self.cpus, self.memory_mb = cpus, memory_mb
        self.processes: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        host = socket.gethostname()
        for sub in ("state", "spool", "munge", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge_socket = self.root / "munge" / "munge.socket"
        self.conf.write_text(f"""\
ClusterName=lstmzoo
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=2
InactiveLimit=0
MinJobAge=600
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        self.write_config()
        munge = self.root / "munge"
        self.spawn("munged", [daemon("munged"), "--foreground", "--force", f"--socket={munge}/munge.socket",
                              "--key-file=/etc/munge/munge.key", f"--pid-file={munge}/munged.pid",
                              f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"])
        self.wait(lambda: (munge / "munge.socket").exists(), timeout, "munged's socket")
        self.spawn("slurmctld", [daemon("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self.wait(lambda: self.scontrol("ping").returncode == 0 and "UP" in self.scontrol("ping").stdout, timeout,
                  "slurmctld")
        self.spawn("slurmd", [daemon("slurmd"), "-D", "-f", str(self.conf), "-N", socket.gethostname()])
        self.wait(lambda: "idle" in self.run("sinfo", "--noheader", "--format=%T").stdout, timeout, "an idle node")
        return self

    def spawn(self, name: str, command: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)

    def wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}) while waiting for {what}: "
                                       f"{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"no {what} after {timeout:.0f} s: {self.logs()}")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, timeout=60)

    def scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("scontrol", *args)

    def requeue(self, job_id: str, timeout: float = 60.0) -> None:
        """Requeue a running job (as pre-emption does) and let it start again at once: SLURM holds a requeued job
        for 2 minutes (BeginTime), which only makes a test wait."""
        requeued = self.scontrol("requeue", job_id)
        if requeued.returncode != 0:
            raise RuntimeError(f"scontrol requeue {job_id}: {requeued.stderr.strip()}")
        listed = ["squeue", "--noheader", f"--jobs={job_id}", "--format=%T|%r"]
        self.wait(lambda: self.run(*listed).stdout.strip() == "PENDING|BeginTime", timeout, f"job {job_id} requeued")
        released = self.scontrol("update", f"JobId={job_id}", "StartTime=now")
        if released.returncode != 0:
            raise RuntimeError(f"scontrol update JobId={job_id} StartTime=now: {released.stderr.strip()}")

    def logs(self, tail: int = 15) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, stop the daemons by their pids (slurmd first), remove the folder."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user=root")
        for name in reversed(DAEMONS):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    reason = missing()
    if reason:
        raise SystemExit(f"cannot start a SLURM test cluster: {reason}")
    cluster = SlurmCluster().start()
    print(f"SLURM test cluster up: export SLURM_CONF={cluster.conf}   (Enter stops it)")
    try:
        input()
    finally:
        cluster.stop()
