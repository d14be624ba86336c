"""affectlab.probing."""
