//! The memory budget: before samples are drawn or loaded and before a context is built,
//! what they will take is added up and checked against `--max-memory` (default: half of
//! the physical memory, or of the cgroup's limit when that is lower), so a run too large
//! for the machine is refused with exit code 2 and the numbers, not killed by the OOM
//! killer half-way.

use crate::error::{AppError, quote};

/// Share of the physical memory the default budget allows.
pub const DEFAULT_SHARE: f64 = 0.5;

/// Used when the machine does not say how much memory it has.
const FALLBACK_BYTES: u64 = 8 << 30;

/// How many bytes a run may use for its samples and contexts, and where that figure
/// came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The limit, in bytes.
    pub bytes: u64,
    /// Where it came from: `--max-memory 8G`, or the default with the machine's figure.
    pub origin: String,
}

impl Budget {
    /// `--max-memory SIZE` if given, otherwise the default for this machine.
    pub fn from_arg(arg: Option<&str>) -> Result<Budget, AppError> {
        match arg {
            Some(s) => {
                let bytes =
                    parse_size(s).map_err(|e| AppError::usage(format!("--max-memory: {e}")))?;
                Ok(Budget {
                    bytes,
                    origin: format!("--max-memory {s}"),
                })
            }
            None => Ok(Budget::machine_default()),
        }
    }

    /// Half of the physical memory, or of the cgroup's memory limit when lower.
    pub fn machine_default() -> Budget {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
        let physical = sys.total_memory();
        let limit = sys
            .cgroup_limits()
            .map(|c| c.total_memory)
            .filter(|&c| c > 0 && c < physical);
        let (total, what) = match (limit, physical) {
            (Some(c), _) => (c, "the cgroup's memory limit"),
            (None, 0) => (
                FALLBACK_BYTES * 2,
                "an assumed 16 GiB (the machine did not say)",
            ),
            (None, p) => (p, "the physical memory"),
        };
        Budget {
            bytes: (total as f64 * DEFAULT_SHARE) as u64,
            origin: format!(
                "the default, half of {what} ({}); --max-memory changes it",
                readable(u128::from(total))
            ),
        }
    }

    /// Refuses (exit code 2) when the `parts` (what, bytes) add up to more than the
    /// budget, naming every part, the total and the budget.
    pub fn check(&self, purpose: &str, parts: &[(&str, u128)]) -> Result<(), AppError> {
        let total = parts.iter().fold(0u128, |t, (_, b)| t.saturating_add(*b));
        if total <= u128::from(self.bytes) {
            return Ok(());
        }
        let listed = parts
            .iter()
            .filter(|(_, b)| *b > 0)
            .map(|(what, b)| format!("{what} {b}"))
            .collect::<Vec<_>>()
            .join(" + ");
        Err(AppError::usage(format!(
            "{purpose} needs {total} bytes ({}: {listed}) but the memory budget is {} bytes ({}, \
             {}); use fewer samples or dimensions, or raise --max-memory",
            readable(total),
            self.bytes,
            readable(u128::from(self.bytes)),
            self.origin
        )))
    }
}

/// Bytes in binary units for people: `512 MiB`, `7.5 GiB`.
pub fn readable(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{} {}", crate::output::sig_trim(v, 3), UNITS[unit])
    }
}

/// A size in bytes: a number (`1e9`, `1500000`) or a number and a binary unit, `K`, `M`,
/// `G` or `T` (powers of 1024; `KiB`, `MB`... read the same), e.g. `8G`, `512M`, `1.5G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{} has an unknown unit {}; expected bytes (1e9) or K, M, G, T (8G, 512M)",
                quote(s),
                quote(unit)
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{} is not a size such as 8G, 512M or 1e9", quote(s)))?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!(
            "{} is {bytes} bytes; a size must be at least 1 byte and below 2^64",
            quote(s)
        ));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units_and_scientific_notation() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size(" 64 k "), Ok(65536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1e30").is_err());
    }

    #[test]
    fn a_run_over_the_budget_is_refused_with_every_number() {
        let b = Budget {
            bytes: 1000,
            origin: "--max-memory 1000".into(),
        };
        assert!(
            b.check("the sweep", &[("samples", 600), ("index", 400)])
                .is_ok()
        );
        let e = b
            .check(
                "the sweep",
                &[("samples", 800), ("index", 400), ("lscv", 0)],
            )
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        for needle in [
            "1200 bytes",
            "samples 800 + index 400",
            "1000 bytes",
            "--max-memory 1000",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
        assert!(!msg.contains("lscv"), "{msg}");
        assert!(Budget::machine_default().bytes > 0);
        assert_eq!(readable(3 << 29), "1.5 GiB");
        assert_eq!(readable(100), "100 bytes");
    }
}
