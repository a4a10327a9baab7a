-- Open sessions of a model counted by recency (the demo's cap on open sessions, issue 14).
CREATE INDEX sessions_model_open ON sessions (model, status, created_ms);
