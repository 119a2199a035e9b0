-- Capacity (docs/capacity.md): a request refused by a rate limit (`rate_limited`), by a full line
-- (`rejected`) or after too long in line (`queue_timeout`) is a dispatch too. The new check is a
-- superset of the old one, so it is added NOT VALID and validated after: validation scans the
-- table without holding inserts back.
ALTER TABLE route_dispatch_log DROP CONSTRAINT route_dispatch_log_status_check;
ALTER TABLE route_dispatch_log ADD CONSTRAINT route_dispatch_log_status_check
  CHECK (status IN ('dispatched', 'client_error', 'stream_error', 'client_closed', 'failed', 'no_candidates',
                    'rate_limited', 'rejected', 'queue_timeout')) NOT VALID;
ALTER TABLE route_dispatch_log VALIDATE CONSTRAINT route_dispatch_log_status_check;

-- Time in the virtual model's line before a slot (0: it never waited; rows from before it: 0),
-- and the name of the client's key (`auth.apiKeys[].name`), never the key itself.
ALTER TABLE route_dispatch_log ADD COLUMN queued_ms int NOT NULL DEFAULT 0;
ALTER TABLE route_dispatch_log ADD COLUMN key_name text;
