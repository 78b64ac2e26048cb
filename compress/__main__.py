"""`python -m compress ...` (also what `torchrun -m compress run RECIPE` starts)."""
import sys

from compress.cli import main

sys.exit(main())
