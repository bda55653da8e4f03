"""Unit tests: one module's logic in process, on Twisted's Clock and StringTransport."""
