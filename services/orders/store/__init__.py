"""SQL for the orders schema (asyncpg, plain SQL), one module per table family."""
