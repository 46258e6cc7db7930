"""Pure compilers: the model in, desired P4 table entries out, one module per concern."""
