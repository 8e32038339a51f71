//! Run-time switches (`[switches]`, `bulwark switch set`): their values, the decision for
//! one request, and the `bulwark-switches` header that tells replicas.
//!
//! A percentage switch is on for a request when a hash of the switch's name and the
//! request's key falls in its share; the key is the request id header the client sent (so
//! one request id gets the same answer on every hop and retry), else the client's IP
//! address (so a client without one gets a consistent experience). The hash is seeded per
//! run, so a client cannot compute offline which ids land on a side.
//!
//! Whatever `bulwark-switches` header a client sends is removed: replicas see only
//! bulwark's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bus::{Bus, EventKind};
use http::HeaderMap;
use http::header::HeaderValue;
use spec::{Switch, SwitchValue};

/// The request header listing every switch's state for the request.
pub const SWITCHES_HEADER: &str = "bulwark-switches";

/// Stores a value set at run time (the journal); called off the async workers.
pub type Persist = Box<dyn Fn(&str, SwitchValue) -> Result<(), String> + Send + Sync>;

/// One switch as `bulwark switch list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchStatus {
    pub name: String,
    pub value: SwitchValue,
    pub default: SwitchValue,
    pub doc: String,
}

/// Why a switch could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("no switch {0:?}; `bulwark switch list` shows the declared ones")]
    Unknown(String),
    #[error("the journal cannot store the switch: {0}")]
    Store(String),
}

/// Every switch of a `bulwark up` and its current value.
#[derive(Default)]
pub struct Switchboard {
    table: RwLock<Arc<Vec<SwitchStatus>>>,
    /// Values set at run time, also for switches a reload removed (a later reload that
    /// declares them again finds them).
    set: RwLock<HashMap<String, SwitchValue>>,
    /// Serializes changes: persist, swap and publish happen in one order.
    changing: std::sync::Mutex<()>,
    persist: Option<Persist>,
    bus: Option<Arc<Bus>>,
    /// Some switch is declared: without one, a request costs one atomic load.
    any: AtomicBool,
    /// Seeds the percentage draws, per run.
    seed: u64,
}

/// The switches' states for one request.
pub(crate) struct Decided {
    table: Arc<Vec<SwitchStatus>>,
    on: Vec<bool>,
}

impl Decided {
    pub fn is_on(&self, name: &str) -> bool {
        self.table
            .iter()
            .position(|s| s.name == name)
            .is_none_or(|i| self.on[i])
    }

    /// `name=on,other=off`.
    pub fn header(&self) -> Option<HeaderValue> {
        let mut text = String::new();
        for (s, on) in self.table.iter().zip(&self.on) {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(&s.name);
            text.push_str(if *on { "=on" } else { "=off" });
        }
        HeaderValue::from_str(&text).ok()
    }
}

impl Switchboard {
    /// `saved`: values set in earlier runs (from the journal); `persist` stores new ones.
    pub fn new(
        saved: HashMap<String, SwitchValue>,
        persist: Option<Persist>,
        bus: Option<Arc<Bus>>,
    ) -> Switchboard {
        Switchboard {
            set: RwLock::new(saved),
            persist,
            bus,
            seed: rand::random(),
            ..Switchboard::default()
        }
    }

    /// Takes the stack file's switches (at start and on reload): each has the value set
    /// at run time if there is one, else its default.
    pub fn declare(&self, switches: &[Switch]) {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        let table = switches
            .iter()
            .map(|s| SwitchStatus {
                name: s.name.clone(),
                value: set.get(&s.name).copied().unwrap_or(s.default),
                default: s.default,
                doc: s.doc.clone(),
            })
            .collect();
        let table: Vec<SwitchStatus> = table;
        self.any.store(!table.is_empty(), Ordering::Release);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    pub fn list(&self) -> Vec<SwitchStatus> {
        self.snapshot().as_ref().clone()
    }

    fn snapshot(&self) -> Arc<Vec<SwitchStatus>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets a switch: stored first (blocking: call it off the async workers), then in
    /// effect, then an event. Returns the value it had.
    pub fn set(&self, name: &str, value: SwitchValue, by: &str) -> Result<SwitchValue, SetError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let table = self.snapshot();
        let i = table
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| SetError::Unknown(name.to_owned()))?;
        if let Some(persist) = &self.persist {
            persist(name, value).map_err(SetError::Store)?;
        }
        self.set
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), value);
        let from = table[i].value;
        let mut changed = table.as_ref().clone();
        changed[i].value = value;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(changed);
        if let Some(bus) = &self.bus {
            bus.publish(EventKind::SwitchChanged {
                name: name.to_owned(),
                from: from.to_string(),
                to: value.to_string(),
                by: by.to_owned(),
            });
        }
        Ok(from)
    }

    /// The states for one request; `None` without switches (one check on the hot path).
    pub(crate) fn decide(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        id_header: &str,
    ) -> Option<Decided> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let table = self.snapshot();
        if table.is_empty() {
            return None;
        }
        let key = headers.get(id_header).map(HeaderValue::as_bytes);
        let on = table
            .iter()
            .map(|s| {
                let draw = || {
                    let mut bytes = self.seed.to_le_bytes().to_vec();
                    bytes.extend_from_slice(s.name.as_bytes());
                    bytes.push(0);
                    match key {
                        Some(k) => bytes.extend_from_slice(k),
                        None => bytes.extend_from_slice(peer.ip().to_string().as_bytes()),
                    }
                    (policy::hash_bytes(&bytes) % 10_000) as f64 / 10_000.0
                };
                match s.value {
                    SwitchValue::Percent(_) => s.value.is_on(draw()),
                    v => v.is_on(0.0),
                }
            })
            .collect();
        Some(Decided { table, on })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Switchboard {
        let b = Switchboard::new(HashMap::from([("b".into(), SwitchValue::Off)]), None, None);
        let sw = |name: &str, default| Switch {
            name: name.into(),
            default,
            doc: String::new(),
        };
        b.declare(&[
            sw("a", SwitchValue::On),
            sw("b", SwitchValue::On),
            sw("p", SwitchValue::Percent(25.0)),
        ]);
        b
    }

    #[test]
    fn a_saved_value_wins_over_the_default_and_a_set_one_over_both() {
        let b = board();
        let values: Vec<_> = b.list().iter().map(|s| s.value).collect();
        assert_eq!(
            values,
            [
                SwitchValue::On,
                SwitchValue::Off,
                SwitchValue::Percent(25.0)
            ]
        );
        assert_eq!(
            b.set("a", SwitchValue::Off, "test").unwrap(),
            SwitchValue::On
        );
        assert!(matches!(
            b.set("zz", SwitchValue::Off, "test"),
            Err(SetError::Unknown(_))
        ));
        b.declare(&[Switch {
            name: "a".into(),
            default: SwitchValue::On,
            doc: String::new(),
        }]);
        assert_eq!(
            b.list()[0].value,
            SwitchValue::Off,
            "a reload keeps the set value"
        );
    }

    #[test]
    fn a_percent_switch_is_on_for_its_share_and_stable_per_request_id() {
        let b = board();
        let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
        let mut on = 0;
        for i in 0..4000 {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from(i));
            let d = b.decide(&h, peer, "x-request-id").unwrap();
            let again = b.decide(&h, peer, "x-request-id").unwrap();
            assert_eq!(d.is_on("p"), again.is_on("p"));
            on += usize::from(d.is_on("p"));
        }
        assert!((800..1200).contains(&on), "{on} of 4000 at 25%");
        let d = b.decide(&HeaderMap::new(), peer, "x-request-id").unwrap();
        let header = d.header().unwrap();
        assert!(
            header.to_str().unwrap().starts_with("a=on,b=off,p=o"),
            "{header:?}"
        );
        assert!(
            Switchboard::default()
                .decide(&HeaderMap::new(), peer, "x")
                .is_none()
        );
    }
}
