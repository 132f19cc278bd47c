"""SQL for the orders schema (asyncpg, plain SQL), one module per table family.

Lock order. Every statement and transaction that places or settles an order takes its row
locks in this one order, so no two of them ever wait on each other in a cycle:

1. `orders` rows of the orders being settled (by order id);
2. `cart_items` rows (by member, then SKU): the unclaimed lines a cart checkout claims,
   or the lines an order being settled holds;
3. `sku_stock_buckets` rows of bucketed SKUs (by SKU, then bucket);
4. `skus` rows (by SKU id);
5. `rate_limits` rows (by member);
6. `idempotency_keys` rows (by member and key).

A statement forces the order with CTEs that lock a step only after the step before has
been read in full (`(SELECT count(*) FROM <earlier>) >= 0`); a transaction (a bucketed
SKU's placing or refill) locks the earlier steps with their own statements first
(`placing.lock_cart`, `settling.lock_order`). A step may be skipped, never reordered.
"""
