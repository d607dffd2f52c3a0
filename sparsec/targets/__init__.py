"""sparsec.targets: one folder per backend (cpu/, gpu/), each holding everything that backend runs."""
