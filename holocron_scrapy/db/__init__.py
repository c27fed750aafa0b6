"""Database access: one module for connections, one for migrations."""
