"""The consults pages: the township's and the worklist's (pages), the reading pages (reading)."""
