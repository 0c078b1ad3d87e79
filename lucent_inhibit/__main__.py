"""``python -m lucent_inhibit STAGE ...``: the command line (``lucent-inhibit``), e.g. under ``torchrun -m``."""
from .app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
