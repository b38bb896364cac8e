"""The math every layer shares, torch only: noise paths, prediction conversions, preconditioning, seeded noise,
and exact toy denoisers. Nothing here knows about networks, families, training or the UI."""
