"""``python -m dlzoo`` (also what ``torchrun -m dlzoo`` runs)."""

import sys

from dlzoo.cli import main

sys.exit(main())
