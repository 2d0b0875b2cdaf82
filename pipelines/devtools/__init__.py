"""Development tools: the dependency lock. Nothing here is imported by the runtime."""
