//! Wire protocol: request/response types, framing, limits. See `docs/protocol.md`.
