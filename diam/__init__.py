"""Active learning for multiple target models (DIAM, NeurIPS 2022): a reproduction."""
