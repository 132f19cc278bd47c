-- A cart checkout claims the cart lines it was priced from, in the statement (or
-- transaction) that places its order, so concurrent checkouts of one cart place one order
-- whichever replicas serve them. A claimed line is out of the cart: confirmation deletes
-- it, a cancellation gives it back (order_id NULL again). Deferred: the transaction path
-- claims the lines before it inserts the order (the lock order of the placing statement).
ALTER TABLE cart_items ADD COLUMN order_id uuid
    REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED;

-- Cart orders still PENDING were placed without claims: their lines are theirs.
UPDATE cart_items c SET order_id = o.id
FROM orders o JOIN order_lines l ON l.order_id = o.id
WHERE o.status = 'PENDING' AND o.from_cart
  AND c.member_id = o.member_id AND c.sku_id = l.sku_id;
