"""scalefit: small training runs -> trustworthy forecasts for large ones.

Conventions (docs/conventions.md): loss in nats per token (natural log); N names which parameters it
counts (total, non-embedding, active); C names how FLOPs were counted (6ND or exact).
"""

__version__ = "0.1.0"
