//! Durations as Compose writes them (Go's `time.ParseDuration`: `1m30s`, `1.5s`, `100ms`)
//! and as Kubernetes writes them (whole seconds), checked against what a stack file takes.

use std::time::Duration;

use crate::yaml::Node;

/// The longest duration a stack file takes for the keys an import fills in.
pub(crate) const MAX: Duration = Duration::from_secs(24 * 3600);

/// A Compose duration, or why it is not one. Bounded by [`MAX`].
pub(crate) fn compose(node: &Node) -> Result<Duration, String> {
    if let Some(why) = crate::command::compose_variable(node) {
        return Err(why);
    }
    let text = node.as_str().ok_or_else(|| {
        format!(
            "expected a duration such as \"10s\", found {}",
            node.describe()
        )
    })?;
    match go(text) {
        Ok(d) if d <= MAX => Ok(d),
        Ok(_) | Err(Bad::TooLong) => Err(too_long(&format!("{text:?}"))),
        Err(Bad::Syntax) => Err(format!(
            "expected a duration such as \"10s\" or \"1m30s\", found {text:?}"
        )),
    }
}

/// Kubernetes' whole seconds (`periodSeconds: 10`), at least `min`. Bounded by [`MAX`].
pub(crate) fn seconds(node: &Node, min: i64) -> Result<Duration, String> {
    let n = node
        .as_int()
        .ok_or_else(|| format!("expected whole seconds, found {}", node.describe()))?;
    if n < min {
        return Err(format!("must be at least {min}, found {n}"));
    }
    match u64::try_from(n) {
        Ok(secs) if secs <= MAX.as_secs() => Ok(Duration::from_secs(secs)),
        _ => Err(too_long(&format!("{n} seconds"))),
    }
}

fn too_long(what: &str) -> String {
    format!("{what} is longer than the 24h a stack file allows")
}

/// Why text is not a duration.
#[derive(Debug, PartialEq)]
enum Bad {
    Syntax,
    /// Too long to count in a `Duration`, let alone to allow.
    TooLong,
}

/// Go's duration syntax: signed sequences of decimal numbers, each with an optional fraction
/// and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is zero. Negative
/// durations are refused.
fn go(text: &str) -> Result<Duration, Bad> {
    let s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(Bad::Syntax);
    }
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(Bad::Syntax);
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(Bad::Syntax),
        };
        // Past this many digits the value is far beyond `MAX` anyway; leading zeros add
        // nothing (`000000000000000000005s` is 5s).
        let int = int.trim_start_matches('0');
        if int.len() > 20 {
            return Err(Bad::TooLong);
        }
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| Bad::Syntax)?
        };
        let mut part = whole.checked_mul(scale).ok_or(Bad::TooLong)?;
        let mut f_scale = scale;
        for d in frac.bytes().take(20) {
            f_scale /= 10;
            part = part
                .checked_add(u128::from(d - b'0') * f_scale)
                .ok_or(Bad::TooLong)?;
        }
        nanos = nanos.checked_add(part).ok_or(Bad::TooLong)?;
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| Bad::TooLong)?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("10s", Ok(ms(10_000))),
            ("1m30s", Ok(ms(90_000))),
            ("1.5s", Ok(ms(1_500))),
            ("100ms", Ok(ms(100))),
            ("2h45m", Ok(ms(9_900_000))),
            ("1h0m0s", Ok(ms(3_600_000))),
            (".5s", Ok(ms(500))),
            ("10us", Ok(Duration::from_micros(10))),
            ("0", Ok(Duration::ZERO)),
            ("0s", Ok(Duration::ZERO)),
            ("+5s", Ok(ms(5_000))),
            ("-5s", Err(Bad::Syntax)),
            ("10", Err(Bad::Syntax)),
            ("s", Err(Bad::Syntax)),
            ("5 s", Err(Bad::Syntax)),
            ("5sec", Err(Bad::Syntax)),
            ("1.2.3s", Err(Bad::Syntax)),
            ("", Err(Bad::Syntax)),
            ("99999999999999999999999999999h", Err(Bad::TooLong)),
            ("9999999999999999999h", Err(Bad::TooLong)),
            ("0000000000000000000000005s", Ok(ms(5_000))),
            ("00s", Ok(Duration::ZERO)),
        ] {
            assert_eq!(go(text), want, "{text}");
        }
    }
}
