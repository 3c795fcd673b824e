"""Built-in scrub profiles: what people remove before a dump leaves the machine.

Spec: SPEC.md §19.3. Each profile is a function of the dump's kernel (symbols, BTF, memory)
that returns :class:`~kdumptool.scrub.resolve.EraseTarget`\\ s, or (``files``, ``user``)
a dump-level bit: those are whole page classes, excluded as makedumpfile's ``-d`` excludes them.

========  ==========================================================================
hostname  ``nodename`` and ``domainname`` (their 64 characters; the final NUL stays) of every
          UTS namespace: ``init_uts_ns`` and each
          one a task's ``nsproxy->uts_ns`` reaches (every thread's); and the same two fields
          of the output's kdump header
dmesg     the kernel log's text: the data ring of ``prb`` and of ``printk_rb_static``
          (``__log_buf``, which still holds the boot log once a larger ring replaced it);
          before Linux 5.10, ``log_buf`` (``log_buf_len`` bytes) and ``__log_buf``
          (the records' metadata stays: timestamps, lengths, levels)
keys      the payload of every key in ``key_serial_tree``: ``user``, ``logon``,
          ``dns_resolver`` (``user_key_payload.data``, ``datalen`` bytes), ``encrypted``
          (``encrypted_key_payload.payload_data``), ``trusted`` (``trusted_key_payload.key``),
          ``big_key`` (the inline data, or the key of the file-backed data)
files     page-cache pages (dump level 4)
user      user-space pages (dump level 8)
free      free pages: dump level 16, and the pages on the per-CPU free lists, which level 16
          keeps (:mod:`kdumptool.scrub.pcp`)
all       all of the above
========  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kdumptool.errors import KdumpToolError, KernelDataError
from kdumptool.kernel.session import Kernel
from kdumptool.kernel.structs import Fields
from kdumptool.scrub.resolve import EraseTarget

PROFILES = ("hostname", "dmesg", "keys", "files", "user", "free")
#: Dump-level bits the page-class profiles add (makedumpfile: 4 cache incl. private, 8 user,
#: 16 free).
PROFILE_LEVELS = {"files": 4, "user": 8, "free": 16}
#: More keys than any real key tree holds.
MAX_KEYS = 1 << 20
#: A key payload larger than this is taken as corrupt (user keys are at most 32767 bytes,
#: big_key inline data at most a page or so).
MAX_PAYLOAD = 1 << 20
#: Key types whose payload is a ``struct user_key_payload`` (security/keys/user_defined.c,
#: net/dns_resolver/dns_key.c).
USER_PAYLOAD_TYPES = ("user", "logon", "dns_resolver")


@dataclass
class ProfileResult:
    """What the chosen profiles erase: targets, dump-level bits, header fields, notes."""

    targets: list[EraseTarget] = field(default_factory=list)
    dump_level: int = 0
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # PFNs
    header_fields: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    commands: int = 0  # erase-command numbers used (the next user starts after them)


def parse_profiles(names: list[str]) -> list[str]:
    """Expand ``all`` and comma lists; keep the documented order.

    :raises ValueError: an unknown profile
    """
    chosen: set[str] = set()
    for item in names:
        for name in item.split(","):
            name = name.strip()
            if name == "all":
                chosen.update(PROFILES)
            elif name in PROFILES:
                chosen.add(name)
            else:
                raise ValueError(f"unknown scrub profile {name!r} (choose from {', '.join(PROFILES)}, all)")
    return [p for p in PROFILES if p in chosen]


class _Emitter:
    """Numbers erase commands and builds targets."""

    def __init__(self, result: ProfileResult, profile: str) -> None:
        self.result = result
        self.origin = f"profile {profile}"
        self.numbers: dict[str, int] = {}

    def erase(self, vaddr: int, size: int, rule: str) -> None:
        if rule not in self.numbers:
            self.numbers[rule] = self.result.commands
            self.result.commands += 1
        if size > 0:
            self.result.targets.append(EraseTarget(vaddr, size, False, rule, self.numbers[rule], self.origin))


def _ptr(kernel: Kernel, addr: int, what: str) -> int:
    return kernel.mem.u64(addr, what) if kernel.btf.pointer_size == 8 else kernel.mem.u32(addr, what)


def hostname(kernel: Kernel, out: _Emitter) -> None:
    """``nodename``/``domainname`` of ``init_uts_ns`` and of every task's UTS namespace."""
    btf = kernel.btf
    uts = Fields(btf, "uts_namespace", ("name.nodename", "name.domainname"))
    fields = [(f, uts.add(f"name.{f}")) for f in ("nodename", "domainname")]
    init = kernel.symbol("init_uts_ns")
    out.result.header_fields = ("nodename", "domainname")
    # the first 64 bytes: the last is the string's NUL (__NEW_UTS_LEN + 1), which readers of the
    # field (crash's NODENAME) need
    for name, f in fields:
        out.erase(init + f.offset, f.size - 1, f"init_uts_ns.name.{name}")
    seen = {init}
    nsproxy = btf.offsetof("task_struct", "nsproxy")
    uts_ns = btf.offsetof("nsproxy", "uts_ns")
    try:
        tasks = kernel.tasks()
    except KdumpToolError as exc:
        out.result.notes.append(f"{out.origin}: the task list cannot be read ({exc}): only "
                                "init_uts_ns is erased")
        return
    for task in tasks:
        try:
            proxy = _ptr(kernel, task.address + nsproxy, "task_struct.nsproxy")
            ns = _ptr(kernel, proxy + uts_ns, "nsproxy.uts_ns") if proxy else 0
        except KdumpToolError as exc:
            out.result.notes.append(f"{out.origin}: task {task.pid}: {exc}")
            continue
        if ns and ns not in seen:
            seen.add(ns)
            for name, f in fields:
                out.erase(ns + f.offset, f.size - 1, f"t.nsproxy.uts_ns.name.{name}")


def dmesg(kernel: Kernel, out: _Emitter) -> None:
    """The text of the kernel log: every printk ring's data, and the static boot buffer."""
    syms = kernel.core_symbols
    btf = kernel.btf
    if syms.address("prb") is not None:  # Linux 5.10+: lockless ring buffer
        ring = Fields(btf, "printk_ringbuffer", ("text_data_ring.size_bits", "text_data_ring.data"))
        rings = [("printk_rb_static", syms.address("printk_rb_static"))]
        rings.insert(0, ("prb", _ptr(kernel, kernel.symbol("prb"), "prb")))
        for name, addr in rings:
            if not addr:
                continue
            raw = kernel.mem.read(addr, ring.size, name)
            bits = ring.int(raw, "text_data_ring.size_bits")
            data = ring.int(raw, "text_data_ring.data")
            if not 0 < bits <= 31 or not data:
                out.result.notes.append(f"{out.origin}: {name}: text data ring of 2^{bits} bytes at "
                                        f"{data:#x}: not plausible, skipped")
                continue
            out.erase(data, 1 << bits, f"{name}.text_data_ring.data")
    elif syms.address("log_buf") is not None:  # Linux 3.5 - 5.9
        buf = _ptr(kernel, kernel.symbol("log_buf"), "log_buf")
        size = kernel.mem.u32(kernel.symbol("log_buf_len"), "log_buf_len")
        if buf and 0 < size <= 1 << 31:
            out.erase(buf, size, "log_buf")
        static = syms.address("__log_buf")  # the boot buffer, replaced by a larger log_buf
        found = syms.symbolize(static) if static is not None else None
        if static is not None and found is not None and found[1] == 0 and static != buf:
            out.erase(static, found[2], "__log_buf")
    else:
        raise KernelDataError(f"{kernel.reader.info.path}: no kernel log found (neither prb nor log_buf)")


def _rb_inorder(kernel: Kernel, root: int, left: int, right: int) -> list[int]:
    """Nodes of an rb-tree in order, bounded; a node seen twice ends the walk (raised)."""
    out: list[int] = []
    seen: set[int] = set()
    stack: list[int] = []
    node = _ptr(kernel, root, "rb_root")
    while stack or node:
        while node:
            if node in seen or len(seen) >= MAX_KEYS:
                raise KernelDataError(f"key tree: node {node:#x} repeats or more than {MAX_KEYS} keys "
                                      f"(after {len(out)} keys)")
            seen.add(node)
            stack.append(node)
            node = _ptr(kernel, node + left, "rb_node.rb_left")
        node = stack.pop()
        out.append(node)
        node = _ptr(kernel, node + right, "rb_node.rb_right")
    return out


def keys(kernel: Kernel, out: _Emitter) -> None:
    """The payload of every key in ``key_serial_tree``."""
    btf = kernel.btf
    k = Fields(btf, "key", ("serial", "type", "serial_node", "payload"))
    kt = Fields(btf, "key_type", ("name",))
    left, right = btf.offsetof("rb_node", "rb_left"), btf.offsetof("rb_node", "rb_right")
    try:
        nodes = _rb_inorder(kernel, kernel.symbol("key_serial_tree"), left, right)
    except KernelDataError as exc:
        out.result.notes.append(f"{out.origin}: {exc}: the rest of the tree is not erased")
        nodes = []
    names: dict[int, str] = {}
    handlers: dict[str, Callable[[Kernel, _Emitter, int, str], None]] = {
        **{t: _user_payload for t in USER_PAYLOAD_TYPES}, "encrypted": _encrypted_payload,
        "trusted": _trusted_payload, "big_key": _big_key_payload}
    for node in nodes:
        key = node - k.offset("serial_node")
        try:
            raw = kernel.mem.read(key, k.size, "struct key")
            type_ptr = k.int(raw, "type")
            if type_ptr not in names:
                name_ptr = _ptr(kernel, type_ptr + kt.offset("name"), "key_type.name")
                names[type_ptr] = kernel.mem.cstr(name_ptr, 64, "key type name").decode("latin-1")
            handler = handlers.get(names[type_ptr])
            if handler is not None:
                serial = k.int(raw, "serial") & 0xFFFFFFFF
                handler(kernel, out, key + k.offset("payload"), f"key_serial_tree[{serial:#x}]")
        except KdumpToolError as exc:
            out.result.notes.append(f"{out.origin}: key at {key:#x}: {exc}")


def _user_payload(kernel: Kernel, out: _Emitter, payload: int, name: str) -> None:
    u = Fields(kernel.btf, "user_key_payload", ("datalen", "data"))
    p = _ptr(kernel, payload, "key.payload.data[0]")
    if p:
        raw = kernel.mem.read(p, u.size, "user_key_payload")
        n = u.int(raw, "datalen")
        out.erase(p + u.offset("data"), min(n, MAX_PAYLOAD), f"{name}.payload.data")


def _module_struct(kernel: Kernel, struct: str, paths: tuple[str, ...]) -> Fields:
    """A struct's fields from vmlinux BTF, else from the BTF of a loaded module that has it."""
    try:
        return Fields(kernel.btf, struct, paths)
    except KeyError:
        pass
    kbtf = kernel.read_btf()
    for mod in kbtf.modules or []:
        btf = mod.parse(kernel.btf)
        if btf.find_all(struct, "struct"):
            return Fields(btf, struct, paths)
    raise KernelDataError(f"struct {struct} is in no BTF of the dump")


def _encrypted_payload(kernel: Kernel, out: _Emitter, payload: int, name: str) -> None:
    e = _module_struct(kernel, "encrypted_key_payload", ("payload_datalen", "payload_data"))
    p = _ptr(kernel, payload, "key.payload.data[0]")
    if p:
        raw = kernel.mem.read(p, e.size, "encrypted_key_payload")
        n = e.int(raw, "payload_datalen")
        out.erase(p + e.offset("payload_data"), min(n, MAX_PAYLOAD), f"{name}.payload.payload_data")


def _trusted_payload(kernel: Kernel, out: _Emitter, payload: int, name: str) -> None:
    t = _module_struct(kernel, "trusted_key_payload", ("key",))
    p = _ptr(kernel, payload, "key.payload.data[0]")
    if p:
        f = t.add("key")
        out.erase(p + f.offset, f.size, f"{name}.payload.key")


def _big_key_payload(kernel: Kernel, out: _Emitter, payload: int, name: str) -> None:
    """``payload.data[]``: ``{data, path (2 words), length}`` (security/keys/big_key.c): the data
    inline, or (file-backed: a dentry in the path) the 32-byte key of the encrypted file."""
    w = kernel.btf.pointer_size
    data = _ptr(kernel, payload, "big_key data")
    dentry = _ptr(kernel, payload + 2 * w, "big_key path.dentry")
    length = _ptr(kernel, payload + 3 * w, "big_key length")
    if data:
        out.erase(data, 32 if dentry else min(length, MAX_PAYLOAD), f"{name}.payload.data")


_PROFILE_FUNCS: dict[str, Callable[[Kernel, _Emitter], None]] = {
    "hostname": hostname, "dmesg": dmesg, "keys": keys}


def run_profiles(kernel: Kernel, profiles: list[str]) -> ProfileResult:
    """The targets and dump-level bits of the chosen profiles (see :func:`parse_profiles`).

    :raises KdumpToolError: a profile cannot find what it erases at all (no symbols, no BTF,
        no kernel log): scrubbing silently less than asked is worse than stopping
    """
    result = ProfileResult()
    for name in profiles:
        if name in PROFILE_LEVELS:
            result.dump_level |= PROFILE_LEVELS[name]
            if name == "free":
                from kdumptool.scrub.pcp import pcp_free_pages

                result.exclude, notes = pcp_free_pages(kernel)
                result.notes.extend(f"profile free: {n}" for n in notes)
            continue
        _PROFILE_FUNCS[name](kernel, _Emitter(result, name))
    return result
