//! Parsing the flags' values: addresses, sizes, durations.

use std::{net::SocketAddr, time::Duration};

use errmap_server::server;

/// Parses `HOST:PORT`, where HOST is an IP address or a name such as
/// `localhost` (the first address it resolves to is used), and
/// `[v6]:PORT`.
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not HOST:PORT, e.g. 127.0.0.1:50051 or localhost:0"
        ));
    };
    if host.is_empty() {
        return Err(format!("{text:?} has no host; e.g. 127.0.0.1:{port}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number (0 to 65535)"))?;
    use std::net::ToSocketAddrs as _;
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Parses `65536`, `64KiB`, `64MiB` or `1GiB`.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 65536, 64KiB or 64MiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; use KiB, MiB or GiB")),
    };
    value
        .checked_mul(scale)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} must be at least 1 byte and fit in memory"))
}

/// Parses `500ms`, `5s`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?}; use ms, s or m")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration > server::MAX_DURATION {
        return Err(format!("{text:?} is longer than a day; use at most 1440m"));
    }
    Ok(duration)
}
