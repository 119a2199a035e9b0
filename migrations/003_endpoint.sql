-- The path a dispatch served (`/v1/chat/completions`, `/v1/messages`, …): the gateway serves
-- every model-routed endpoint of llama-swap. Rows from before it stay NULL.
ALTER TABLE route_dispatch_log ADD COLUMN endpoint text;
