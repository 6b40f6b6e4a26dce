"""Pure math, free of hooks and models: each function is tested exactly on random matrices."""
