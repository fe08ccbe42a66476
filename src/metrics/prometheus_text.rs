//! The exposition in the Prometheus text format 0.0.4, rewritten from OpenMetrics text.

/// Rewrites OpenMetrics text into the Prometheus text format 0.0.4, for scrapers that ask
/// for `text/plain`: counters are named with their `_total` suffix in HELP/TYPE, `info`
/// becomes a gauge named `*_info`, and UNIT lines, exemplars and `# EOF` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut renamed: Vec<(&str, &str, &str)> = Vec::new(); // (family, suffix, type)
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, ty) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match ty {
                "counter" => renamed.push((name, "_total", "counter")),
                "info" => renamed.push((name, "_info", "gauge")),
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some((kind, rest)) = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)))
        {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((_, suffix, ty)) = renamed.iter().find(|(n, _, _)| *n == name) {
                let tail = if kind == "TYPE" { ty } else { tail };
                out.push_str(&format!("# {kind} {name}{suffix} {tail}\n"));
                continue;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Exemplars follow the value after " # ".
        let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
        out.push_str(sample);
        out.push('\n');
    }
    out
}
