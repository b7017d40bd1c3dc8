"""The one rich console for progress lines and tables.

Piped output (CI logs, `make demo | tee`) would otherwise wrap the results table at 80 columns.
"""

import sys

from rich.console import Console

console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
