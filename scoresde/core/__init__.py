"""The maths: schedules, SDEs (the coefficient contract), noise and Brownian paths, the ODE
solver, time grids, adapters, guidance, x0 corrections, DDPM maths and argument checks.
Nothing here imports from another layer (docs/architecture.md)."""
