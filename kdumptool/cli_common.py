"""What every ``kdumptool`` command shares, applied once all commands are registered.

* ``--help`` ends with two or three real examples (:data:`EXAMPLES`, the click epilog);
* the top-level command list shows each command's whole first sentence (click would cut it
  to the terminal's width with "...");
* ``--debug`` is accepted after the command name too (``kdumptool info --debug DUMP``), as
  before it; the group reads it from the command line (:class:`kdumptool.cli._Group`).

Also the refusal of makedumpfile's ``-x VMLINUX``, which kdumptool does not need, the ``-i``
option, and :func:`note`, which prints what the library tells while it works.
"""

from __future__ import annotations

from typing import Any

import click

from kdumptool.errors import UsageError

#: Examples shown at the end of each command's ``--help`` (a command that sets its own
#: epilog keeps it). ``\b`` keeps click from re-wrapping the lines.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "info": [
        ("kdumptool info vmcore", "format, kernel, architecture, pages, notes"),
        ("kdumptool info --pages dump.kdump", "pages per class, like makedumpfile --mem-usage"),
        ("kdumptool info --json dump.1 dump.2", "the two parts of a split set, as one dump"),
    ],
    "vmcoreinfo": [
        ("kdumptool vmcoreinfo vmcore > vmcoreinfo.txt", "the note, for -i elsewhere"),
        ("kdumptool vmcoreinfo --scan vmcore", "the copy in the dump's memory"),
    ],
    "ikconfig": [
        ("kdumptool ikconfig vmcore > config", "like scripts/extract-ikconfig"),
        ("kdumptool ikconfig vmcore | grep CONFIG_PREEMPT", ""),
    ],
    "convert": [
        ("kdumptool convert -c -d 31 vmcore small.kdump", "like makedumpfile -c -d 31"),
        ("kdumptool convert -E dump.kdump vmcore.elf", "back to an ELF core file"),
        ("kdumptool convert -F -z vmcore > dump.flat", "flattened, to a pipe or a file"),
    ],
    "filter": [
        ("kdumptool filter -d 31 vmcore small.kdump", "drop zero, cache, user and free pages"),
        ("kdumptool filter --dry-run -d 31 vmcore small.kdump", "what would be dropped"),
        ("kdumptool filter --split -l -d 31 vmcore part.1 part.2", "a split set of two parts"),
    ],
    "reassemble": [
        ("kdumptool reassemble dump.1 dump.2 whole.kdump", "like makedumpfile --reassemble"),
        ("kdumptool reassemble -f dump.1 dump.2 whole.kdump", "replacing whole.kdump"),
    ],
    "fsck": [
        ("kdumptool fsck dump.kdump", "headers, bitmaps, tables; exit status says how bad"),
        ("kdumptool fsck --deep dump.kdump", "also decode every page"),
        ("kdumptool fsck --json dump.1 dump.2", "a split set, as JSON"),
    ],
    "repair": [
        ("kdumptool repair broken.kdump fixed.kdump", "every page that still decodes"),
        ("kdumptool repair --zero-fill -E broken.elf fixed.elf", "lost pages as zeros"),
        ("kdumptool repair -i vmcoreinfo.txt broken.kdump fixed.kdump", "with VMCOREINFO from a file"),
    ],
    "dmesg": [
        ("kdumptool dmesg vmcore > dmesg.txt", "like makedumpfile --dump-dmesg"),
        ("kdumptool dmesg --partial vmcore", "only what came after the last dmesg -c"),
        ("kdumptool dmesg --json vmcore", "one record per message"),
    ],
    "scrub": [
        ("kdumptool scrub --scrub all -c vmcore clean.kdump", "every profile"),
        ("kdumptool scrub --scrub hostname,keys --dry-run vmcore", "every range it would erase"),
        ("kdumptool scrub --config <(echo 'erase init_task.comm') -E vmcore clean.elf", "a config"),
    ],
    "vtop": [
        ("kdumptool vtop vmcore 0xffffffff99bfb000", "every level of the page-table walk"),
        ("kdumptool vtop vmcore 0x$(kdumptool symbols vmcore init_task | cut -d' ' -f1)", ""),
    ],
}


def _epilog(examples: list[tuple[str, str]]) -> str:
    width = max(len(cmd) for cmd, _ in examples)
    lines = [f"  {cmd.ljust(width)}   # {note}" if note else f"  {cmd}" for cmd, note in examples]
    return "\b\nExamples:\n" + "\n".join(lines) + "\n"


def _first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, whole."""
    para = " ".join(text.strip().split("\n\n")[0].split())
    end = para.find(". ")
    return para if end < 0 else para[:end + 1]


def _debug_option() -> click.Option:
    return click.Option(["--debug"], is_flag=True, expose_value=False,
                        help="Show tracebacks instead of one-line errors.")


def finish_commands(group: click.Group) -> None:
    """Give every command of ``group`` its examples, its whole first line in the command list
    and ``--debug``."""
    for name, cmd in group.commands.items():
        if not cmd.epilog and name in EXAMPLES:
            cmd.epilog = _epilog(EXAMPLES[name])
        if cmd.help and not cmd.short_help:
            cmd.short_help = _first_sentence(cmd.help)
        if not any("--debug" in p.opts for p in cmd.params):
            cmd.params.append(_debug_option())


def _refuse_vmlinux(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        raise UsageError(f"-x {value}: not needed: kdumptool reads the kernel's page layout, "
                         "structure offsets and symbols from the dump's VMCOREINFO (and kallsyms in "
                         "its memory), with no vmlinux; drop -x (or give the VMCOREINFO text with -i)")


#: makedumpfile's ``-x VMLINUX``, refused with the reason.
VMLINUX_OPTION = click.option(
    "-x", "vmlinux", metavar="VMLINUX", default=None, expose_value=False, callback=_refuse_vmlinux,
    is_eager=True, help="Not needed (makedumpfile's -x): the kernel's layout comes from VMCOREINFO.")


_VMCOREINFO_HELP = "Use the VMCOREINFO text in this file (for a dump that lacks it or carries a wrong one)."

#: ``-i FILE``: VMCOREINFO text for a dump that lacks it or carries a wrong one.
VMCOREINFO_OPTION = click.option(
    "-i", "--vmcoreinfo", "vmcoreinfo_file", type=click.Path(dir_okay=False), default=None,
    help=_VMCOREINFO_HELP)


def note(line: str) -> None:
    """Print a line the library tells while it works (a :data:`kdumptool.api.Notify`) on
    standard error, after the program's name."""
    click.echo(f"kdumptool: {line}", err=True)
