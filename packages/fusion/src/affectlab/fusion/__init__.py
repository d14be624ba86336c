"""affectlab.fusion."""
