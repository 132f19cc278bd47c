"""SQL for the membership schema (asyncpg, plain SQL), one module per table family."""
