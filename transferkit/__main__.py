"""``python -m transferkit …`` is the ``transferkit`` command (`transferkit.course.cli`), also
under torchrun: ``torchrun --nproc-per-node 2 -m transferkit finetune …``."""

import sys

from transferkit.course.cli import main

if __name__ == "__main__":
    sys.exit(main())
