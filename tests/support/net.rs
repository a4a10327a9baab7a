//! Helpers for tests that run the `elicit` binary as a separate process.

/// A TCP port free on 127.0.0.1 at the time of the call (for a process started right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
