//! Graceful degradation: what a client gets when no replica can answer
//! (`[services.NAME.expose.fallback]`), and the run-time switches (`[switches]`) that
//! turn routes off.

use std::time::Duration;

/// `[services.NAME.expose.fallback]`: what a client gets when no replica can answer (none
/// ready, all ejected or behind open breakers, every try failed with 502, 503 or 504, or
/// the request deadline passed), and what a route whose switch is off gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// The answer given when no stale copy is at hand; `None` with `stale` alone.
    pub answer: Option<FallbackAnswer>,
    /// Serve stale copies of cacheable GET responses, if set. A stale copy is preferred
    /// to `answer` when one is at hand.
    pub stale: Option<Stale>,
}

/// A fallback's own answer.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackAnswer {
    /// A fixed response (the body file was read when the stack file was loaded).
    Static {
        /// Its status code.
        status: u16,
        /// Its headers, names in lowercase, in file order.
        headers: Vec<(String, String)>,
        /// Its body.
        body: Vec<u8>,
    },
    /// The request is forwarded to this service's proxy instead.
    Service(String),
}

/// The bounds of a service's cache of stale copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// Copies kept at most (least recently used ones go first).
    pub max_entries: u32,
    /// Bytes of bodies kept at most.
    pub max_bytes: u64,
    /// A response with a larger body is never copied. At most `max_bytes`.
    pub max_entry_bytes: u64,
    /// How old a copy may be when served, unless its `stale-if-error` says otherwise.
    pub max_age: Duration,
}

/// `[switches.NAME]`: a run-time switch, changed by `bulwark switch set`.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    /// The switch's name (its key in the stack file).
    pub name: String,
    /// Its value until someone sets it (a set value outlives restarts, in the journal).
    pub default: SwitchValue,
    /// What it turns on or off, for `bulwark switch list`.
    pub doc: String,
}

/// A switch's value: on, off, or on for a share of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwitchValue {
    /// On for every request.
    On,
    /// Off for every request.
    Off,
    /// On for this percentage (0 to 100) of requests.
    Percent(f64),
}

impl SwitchValue {
    /// Whether the switch is on for a request whose draw is `draw`, in `[0, 1)`.
    pub fn is_on(self, draw: f64) -> bool {
        match self {
            SwitchValue::On => true,
            SwitchValue::Off => false,
            SwitchValue::Percent(p) => draw * 100.0 < p,
        }
    }
}

impl std::fmt::Display for SwitchValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchValue::On => f.write_str("on"),
            SwitchValue::Off => f.write_str("off"),
            SwitchValue::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for SwitchValue {
    type Err = String;

    /// `on`, `off`, or a percentage from `0%` to `100%` (`12.5%` works).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "on" => Ok(SwitchValue::On),
            "off" => Ok(SwitchValue::Off),
            t => {
                let n = t
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<f64>().ok());
                match n {
                    Some(p) if (0.0..=100.0).contains(&p) => Ok(SwitchValue::Percent(p)),
                    Some(_) => Err(format!("{t:?} is not a percentage from 0% to 100%")),
                    None => Err(format!(
                        "{t:?} is not a switch value: use \"on\", \"off\" or a percentage \
                         such as \"25%\""
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SwitchValue;

    #[test]
    fn switch_values_read_and_print_alike() {
        for text in ["on", "off", "25%", "12.5%", "0%", "100%"] {
            let v: SwitchValue = text.parse().unwrap();
            assert_eq!(v.to_string(), text);
        }
        for bad in ["", "yes", "25", "150%", "-1%", "x%"] {
            assert!(bad.parse::<SwitchValue>().is_err(), "{bad}");
        }
        assert!(SwitchValue::Percent(25.0).is_on(0.2));
        assert!(!SwitchValue::Percent(25.0).is_on(0.25));
    }
}
