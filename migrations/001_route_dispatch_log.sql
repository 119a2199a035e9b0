-- One row per dispatch (SPEC §7). The seed's columns come first, in the seed's order, then ours.
-- `id` is the event id fixed at the gateway (whatever BullMQ job carries it), so a redelivered event can
-- only ever land on the same row. The table is not partitioned: a partitioned table would need
-- `created_at` in the key, and the volume of one gateway fleet fits a plain table well.
CREATE TABLE route_dispatch_log (
  virtual_model      text,
  chosen_provider_id text,
  chosen_model       text,
  candidates_tried   jsonb       NOT NULL DEFAULT '[]'::jsonb,
  status             text        NOT NULL
    CHECK (status IN ('dispatched', 'client_error', 'stream_error', 'client_closed', 'failed', 'no_candidates')),
  source             text,
  error              text,
  duration_ms        int,
  id                 uuid        PRIMARY KEY,
  created_at         timestamptz NOT NULL,
  inserted_at        timestamptz NOT NULL DEFAULT now(),
  request_id         text,
  requested_model    text,
  attempts           jsonb       NOT NULL DEFAULT '[]'::jsonb,
  ttfb_ms            int,
  stream             boolean,
  prompt_tokens      int,
  completion_tokens  int,
  replica            text
);

-- "What happened in the last hour", newest first.
CREATE INDEX route_dispatch_log_created_at_idx ON route_dispatch_log (created_at);
-- Failover and latency per virtual model over time.
CREATE INDEX route_dispatch_log_virtual_model_created_at_idx ON route_dispatch_log (virtual_model, created_at);
-- "Show me the failures since ..."
CREATE INDEX route_dispatch_log_status_created_at_idx ON route_dispatch_log (status, created_at);
-- A client reports a request id: find its dispatch.
CREATE INDEX route_dispatch_log_request_id_idx ON route_dispatch_log (request_id);
