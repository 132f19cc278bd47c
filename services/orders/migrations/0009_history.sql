-- `marketplace audit --since` reads the orders changed in its window (every write sets
-- updated_at), not the whole history.
CREATE INDEX IF NOT EXISTS orders_updated_at ON orders (updated_at);
