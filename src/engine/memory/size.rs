//! Memory sizes as `--max-memory` takes them, with Redis's units.

use crate::{KvsError, Result};

/// Parses `512mb`, `2gb`, `100kb`, `1.5gb` or plain bytes (`1048576`),
/// case-insensitive, as Redis's `maxmemory`: `kb`/`mb`/`gb` are powers of
/// 1024, `k`/`m`/`g` powers of 1000. `0` means unbounded.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let units: [(&str, u64); 7] = [
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("k", 1_000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
        ("b", 1),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| t.strip_suffix(suffix).map(|n| (n.trim(), *unit)))
        .unwrap_or((t.as_str(), 1));
    let bad = || {
        KvsError::InvalidInput(format!(
            "invalid size `{s}` (expected bytes or a number with kb, mb or gb, e.g. 512mb)"
        ))
    };
    if number.is_empty() || number.starts_with(['-', '+']) {
        return Err(bad());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(unit).ok_or_else(bad);
    }
    let f: f64 = number.parse().map_err(|_| bad())?;
    let bytes = f * unit as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_redis() {
        assert_eq!(parse_size("512mb").unwrap(), 512 << 20);
        assert_eq!(parse_size("2gb").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100kb").unwrap(), 100 << 10);
        assert_eq!(parse_size("100k").unwrap(), 100_000);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1.5gb").unwrap(), 3 << 29);
        assert_eq!(parse_size(" 64 mb ").unwrap(), 64 << 20);
        for bad in [
            "",
            "mb",
            "-1",
            "12xb",
            "1e400gb",
            "99999999999999999999gb",
            "nan",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
