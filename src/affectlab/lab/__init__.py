"""affectlab.lab."""
