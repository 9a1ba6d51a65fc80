"""Task harnesses built on the core: LAMA knowledge probing (and, later, SuperGLUE)."""
