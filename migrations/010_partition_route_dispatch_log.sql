-- route_dispatch_log range-partitioned by created_at, one partition a day (docs/operations.md,
-- "Partitions and retention"): at 100 requests/s the table gains 8.6 million rows a day, and
-- retention is then dropping a day's partition rather than deleting its rows. The key becomes
-- (id, created_at): a partitioned table's key must hold the partition column. `created_at` is
-- fixed at the gateway with the id, so a redelivered event still meets its own row and
-- `ON CONFLICT (id, created_at) DO NOTHING` keeps inserts idempotent.
--
-- The rows of the unpartitioned table are copied into the new table's DEFAULT partition, in this
-- transaction: inserts wait (SHARE lock) for the copy, so none is lost between the copy and the
-- swap. The worker's upkeep (src/dispatch-log/partitions.ts) then creates the daily partitions,
-- moving their rows out of the DEFAULT one, and deletes rows older than the retention there.
-- Numbered 010 so that it sorts after every migration it depends on.
LOCK TABLE route_dispatch_log IN SHARE MODE;

CREATE TABLE route_dispatch_log_partitioned (LIKE route_dispatch_log INCLUDING ALL EXCLUDING INDEXES)
  PARTITION BY RANGE (created_at);
ALTER TABLE route_dispatch_log_partitioned ADD CONSTRAINT route_dispatch_log_partitioned_pkey PRIMARY KEY (id, created_at);
CREATE TABLE route_dispatch_log_default PARTITION OF route_dispatch_log_partitioned DEFAULT;

INSERT INTO route_dispatch_log_partitioned SELECT * FROM route_dispatch_log;

DROP TABLE route_dispatch_log;
ALTER TABLE route_dispatch_log_partitioned RENAME TO route_dispatch_log;
ALTER TABLE route_dispatch_log RENAME CONSTRAINT route_dispatch_log_partitioned_pkey TO route_dispatch_log_pkey;

-- The operator indexes of 001, on the parent: every partition gets its own.
CREATE INDEX route_dispatch_log_created_at_idx ON route_dispatch_log (created_at);
CREATE INDEX route_dispatch_log_request_id_idx ON route_dispatch_log (request_id);
