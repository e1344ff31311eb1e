//! The process's own figures, read from `/proc` at each scrape.

pub(super) struct Process {
    pub(super) resident_bytes: u64,
    pub(super) open_fds: u64,
    pub(super) cpu_seconds: f64,
}

/// This process's RSS, open descriptors and CPU time, from `/proc`.
pub(super) fn read_process() -> Option<Process> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th after the closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(Process {
        resident_bytes: resident_kib * 1024,
        open_fds,
        cpu_seconds: ticks / 100.0,
    })
}
