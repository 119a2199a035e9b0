-- Continuations of a stream broken after its first byte, on another candidate (resume); each is
-- also an attempt with outcome `resumed`. Rows from before it: 0.
ALTER TABLE route_dispatch_log ADD COLUMN resumes int NOT NULL DEFAULT 0;
