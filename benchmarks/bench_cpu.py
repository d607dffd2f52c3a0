#!/usr/bin/env python
"""CPU benchmark of sparsec against torch dense, torch.sparse and scipy (the harness is sparsec.bench).

    python benchmarks/bench_cpu.py              # full grid + MLP + BERT-base -> benchmarks/RESULTS.md
    python benchmarks/bench_cpu.py --quick      # reduced grid, < 1 minute
    sparsec bench [--target cpu|gpu] [--quick] [--out PATH]   # the same, from an installed package

See benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import sparsec  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsec.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
