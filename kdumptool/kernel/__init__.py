"""The kernel inside the dump, read without vmlinux.

The kernel keeps in its own memory what a debugger needs: the kallsyms tables
(:mod:`kdumptool.kernel.kallsyms`), the BTF type information of vmlinux and of each
module (:mod:`kdumptool.kernel.btf`), and from those two the objects a crash report
names: tasks, modules, taint (:mod:`kdumptool.kernel.objects`).  :class:`KernelMemory`
reads kernel virtual memory of a dump; :func:`kdumptool.kernel.session.open_kernel`
ties it all together behind one object.
"""
