//! The network server.
