//! The Prometheus text format 0.0.4, from what prometheus-client writes.

use super::*;

/// What prometheus-client writes (OpenMetrics text) in the Prometheus text
/// format 0.0.4. A family's HELP and TYPE lines name it as its samples
/// are named there: a counter's samples end in `_total`, so its metadata
/// must too (`# TYPE x counter` above `x_total` is read as an untyped
/// family by Prometheus' own parsers). An `info` family is a `gauge` named
/// `x_info`, `unknown` is `untyped`; UNIT lines and the EOF marker, which
/// 0.0.4 does not have, are dropped.
pub(super) fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A HELP line waits for its TYPE line, which decides the name.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some((help_name, text)) = help.take() {
                let renamed = if help_name == name { suffix } else { "" };
                let _ = writeln!(out, "# HELP {help_name}{renamed} {text}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if let Some((name, text)) = help.take() {
            let _ = writeln!(out, "# HELP {name} {text}");
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((name, text)) = help {
        let _ = writeln!(out, "# HELP {name} {text}");
    }
    out
}
