//! How quantities are written for people, shared by `ddmq work`'s status line and `ddmq top`.

/// A duration in seconds, rounded to what a person reads at a glance: `12s`, `3m05s`, `1h02m`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(5.2), "5s");
        assert_eq!(format_duration(185.0), "3m05s");
        assert_eq!(format_duration(3720.0), "1h02m");
        assert_eq!(format_duration(-1.0), "0s");
    }
}
