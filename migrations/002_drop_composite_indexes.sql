-- A query of one virtual model or one status over a time range is served by the created_at
-- index and a filter. The two composite indexes made every insert pay for two more index
-- entries, about a fifth of a row's cost in the embedded store (19-21 against 24-25 µs a row,
-- 1,000-row COPY batches), for queries neither the docs nor the dashboards make.
DROP INDEX IF EXISTS route_dispatch_log_virtual_model_created_at_idx;
DROP INDEX IF EXISTS route_dispatch_log_status_created_at_idx;
