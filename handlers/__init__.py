"""Operation handlers, one module per spec tag, each function named by its operationId."""
