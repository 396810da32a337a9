"""The platform author's kit: local runs, spec sources, the scaffold and recorded responses."""
