//! Helpers for tests that run the `elicit` binary as a separate process.

use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port this module hands out.
const LOWEST: u16 = 10_000;

/// A TCP port free on 127.0.0.1 at the time of the call (for a process started right after),
/// below the kernel's ephemeral range. A port the kernel picked (`bind` to port 0) is one it
/// also gives outgoing connections as their local port: while a process that listens on it is
/// down (a killed database node, a replica restarted), a client's new connection can take it,
/// and the process cannot listen again (the failover test once saw a rejoining node stuck so).
/// Ports below the range are never given to outgoing connections.
pub fn free_port() -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let below = ephemeral_low().unwrap_or(32_768).max(LOWEST + 1_000);
    let span = u32::from(below - LOWEST);
    // Spread the test processes (and the calls of one) over the span, so that two of them
    // probing at the same moment rarely start at the same port.
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919));
    (0..span)
        .map(|k| LOWEST + ((seed.wrapping_add(k)) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
