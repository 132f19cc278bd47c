-- The flash-sale decision on one hot SKU (services/orders/store/stock.py `_TAKE_FROM`): a
-- conditional decrement of one random bucket row, committed on its own, for pgbench
-- -M prepared. `flash_buckets` (8 buckets, as orders' default `hot_sku_buckets`, with a
-- billion units each so it never sells out) is made by bench/flash.py in `bench_ceiling`.
\set b random(0, 7)
UPDATE flash_buckets SET stock = stock - 1 WHERE sku = 1 AND bucket = :b AND stock >= 1 RETURNING bucket;
