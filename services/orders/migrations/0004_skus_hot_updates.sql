-- Every checkout changes a SKU row twice (units held when placed, sold when confirmed), and
-- a flash sale changes its few rows thousands of times a second. With `stock` carried in
-- skus_product_price none of the placing updates could be HOT: each wrote a new entry into
-- all three of the table's indexes, bloating them fastest on the hottest rows. Price and
-- stock filters find a product's few SKUs through skus_product and check the rows.
DROP INDEX skus_product_price;
-- Leave room on each page for the next versions of its rows, so updates stay on the page.
ALTER TABLE skus SET (fillfactor = 90);
