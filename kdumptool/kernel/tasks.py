"""Every task of the dumped kernel, from ``init_task.tasks`` and the run queues.

Walk (SPEC.md, "Tasks"): the thread-group leaders are on the ring ``init_task.tasks``
(``task_struct.tasks``); each leader's threads are on ``signal->thread_head`` linked by
``task_struct.thread_node`` (Linux 6.7+ style, also present in 6.1), or on the older
``task_struct.thread_group`` ring.  Each CPU's run queue (the per-CPU ``runqueues``,
at ``__per_cpu_offset[cpu]`` plus the symbol's per-CPU offset) names its current task
(``rq.curr``) and its idle task (``rq.idle``: ``swapper/N``, not on the ring but for CPU 0).
Every offset comes from the dump's BTF.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdumptool.errors import KdumpToolError, KernelDataError
from kdumptool.kernel.structs import Fields, walk_list

#: ``task_struct.__state``/``exit_state`` bits as ``/proc/PID/stat`` reports them
#: (Linux ``include/linux/sched.h`` TASK_REPORT; ``fs/proc/array.c`` ``task_state_array``).
STATE_LETTERS = "RSDTtXZP"
TASK_REPORT = 0x7F
TASK_IDLE = 0x402  # TASK_UNINTERRUPTIBLE | TASK_NOLOAD
MAX_TASKS = 1 << 22
MAX_CPUS = 8192


@dataclass(frozen=True)
class Task:
    """One task: ``pid`` (thread id), ``tgid``, parent's ``ppid``, ``comm``, ``state`` letter,
    the ``cpu`` it last ran on, ``running`` (the current task of that CPU's run queue),
    ``address`` of its ``task_struct``."""

    pid: int
    tgid: int
    ppid: int
    comm: str
    state: str
    cpu: int
    running: bool
    address: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, the address in hex."""
        d = asdict(self)
        d["address"] = f"{self.address:#x}"
        return d


def state_letter(state: int, exit_state: int) -> str:
    """The letter ``ps`` shows for a task's ``__state`` and ``exit_state``."""
    if state == TASK_IDLE:
        return "I"
    bits = (state | exit_state) & TASK_REPORT
    return STATE_LETTERS[bits.bit_length()] if bits else "R"


class TaskWalker:
    """Reads tasks of ``kernel`` (a :class:`~kdumptool.kernel.session.Kernel`)."""

    def __init__(self, kernel: object) -> None:
        self.kernel = kernel
        mem = kernel.mem  # type: ignore[attr-defined]
        self.mem = mem
        btf = kernel.btf  # type: ignore[attr-defined]
        self.t = Fields(btf, "task_struct", ("pid", "tgid", "comm", "tasks", "real_parent"))
        self.state_member = "__state" if self.t.has("__state") else "state"
        self.cpu_member = "thread_info.cpu" if self.t.has("thread_info.cpu") else "cpu"
        self.threads = "thread_node" if self.t.has("thread_node") else (
            "thread_group" if self.t.has("thread_group") else None)
        self.signal = Fields(btf, "signal_struct") if self.threads == "thread_node" else None
        self.rq = Fields(btf, "rq", ("curr", "idle"))

    def _raw(self, address: int) -> bytes:
        return self.mem.read(address, self.t.size, "task_struct")

    def task(self, address: int, running: set[int]) -> Task:
        """The task whose ``task_struct`` is at ``address``."""
        raw = self._raw(address)
        t, e = self.t, self.mem.endian
        parent = t.int(raw, "real_parent", e)
        ppid = 0
        if parent and parent != address and t.int(raw, "pid", e) != 0:  # idle tasks: 0, as crash
            raw_pid = self.mem.read(parent + t.offset("pid"), 4, "task_struct.pid")
            ppid = int.from_bytes(raw_pid, "little" if e == "<" else "big", signed=True)
        exit_state = t.int(raw, "exit_state", e) if t.has("exit_state") else 0
        return Task(pid=t.int(raw, "pid", e), tgid=t.int(raw, "tgid", e), ppid=ppid,
                    comm=t.cstr(raw, "comm"), state=state_letter(t.int(raw, self.state_member, e),
                                                                 exit_state),
                    cpu=t.int(raw, self.cpu_member, e), running=address in running, address=address)

    def runqueues(self) -> list[tuple[int, int, int]]:
        """``(cpu, curr, idle)`` of every possible CPU whose run queue is in the dump."""
        k = self.kernel
        try:
            per_cpu = k.symbol("__per_cpu_offset")  # type: ignore[attr-defined]
            rq_off = k.symbol("runqueues")  # type: ignore[attr-defined]
            ncpus = self.mem.u32(k.symbol("nr_cpu_ids"), "nr_cpu_ids")  # type: ignore[attr-defined]
        except KdumpToolError:
            return []
        out = []
        for cpu in range(min(ncpus, MAX_CPUS)):
            try:
                rq = (self.mem.u64(per_cpu + 8 * cpu, "__per_cpu_offset") + rq_off) % (1 << 64)
                raw = self.mem.read(rq, self.rq.size, "struct rq")
            except KdumpToolError:
                continue
            out.append((cpu, self.rq.int(raw, "curr"), self.rq.int(raw, "idle")))
        return out

    def addresses(self) -> list[int]:
        """Every ``task_struct`` address: ``init_task``, each leader then its threads."""
        init = self.kernel.symbol("init_task")  # type: ignore[attr-defined]
        out = [init]
        links = self.t.offset("tasks")
        for node in walk_list(self.mem, init + links, what="init_task.tasks", limit=MAX_TASKS):
            leader = node - links
            out.append(leader)
            out.extend(self._threads(leader))
        return out

    def _threads(self, leader: int) -> list[int]:
        if self.threads is None:
            return []
        link = self.t.offset(self.threads)
        if self.threads == "thread_group":
            return [n - link for n in walk_list(self.mem, leader + link, what="thread_group",
                                                limit=MAX_TASKS)]
        assert self.signal is not None
        signal = self.t.int(self._raw(leader), "signal") if self.t.has("signal") else 0
        if not signal:
            return []
        head = signal + self.signal.offset("thread_head")
        return [n - link for n in walk_list(self.mem, head, what="signal.thread_head", limit=MAX_TASKS)
                if n - link != leader]


def list_tasks(kernel: object) -> list[Task]:
    """Every task, sorted by pid (idle tasks first, by CPU), each once.

    :raises BtfLookupError: a member the walk needs is not in the BTF
    :raises KernelDataError: a corrupt list
    """
    walker = TaskWalker(kernel)
    rqs = walker.runqueues()
    running = {curr for _, curr, _ in rqs}
    addresses = walker.addresses()
    seen = set(addresses)
    for _, _, idle in rqs:
        if idle and idle not in seen:
            addresses.append(idle)
            seen.add(idle)
    if len(addresses) > MAX_TASKS:
        raise KernelDataError(f"more than {MAX_TASKS} tasks")
    tasks = [walker.task(a, running) for a in addresses]
    return sorted(tasks, key=lambda t: (t.pid, t.cpu))
