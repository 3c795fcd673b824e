"""Address translation: kernel virtual to physical addresses.

This package will hold paging forms plus one generic page-table walker. For now it
has the translation every kernel dump allows without page tables: addresses in
the kernel image (text and data), from VMCOREINFO alone.
"""
