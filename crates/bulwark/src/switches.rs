//! The run-time switches of `bulwark up`, kept in the journal's `switches` namespace (one
//! value per switch, as written: `on`, `off`, `25%`) so a restart keeps what was set.

use std::collections::HashMap;
use std::sync::Arc;

use bus::Bus;
use spec::SwitchValue;

/// The journal namespace.
const NAMESPACE: &str = "switches";

/// A switchboard holding the values set in earlier runs, storing new ones in `store`.
/// Reads the journal: call it off the async workers.
pub fn board(store: Arc<dyn store::Store>, bus: Arc<Bus>) -> proxy::Switchboard {
    let saved: HashMap<String, SwitchValue> = match store.list(NAMESPACE) {
        Ok(values) => values
            .into_iter()
            .filter_map(|(name, bytes)| {
                let value = std::str::from_utf8(&bytes).ok()?.parse().ok();
                if value.is_none() {
                    tracing::warn!(switch = %name, "unreadable switch value in the journal; using its default");
                }
                Some((name, value?))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the switches from the journal; using their defaults");
            HashMap::new()
        }
    };
    let persist: proxy::Persist = Box::new(move |name, value| {
        store
            .put(NAMESPACE, name, value.to_string().as_bytes())
            .map_err(|e| e.to_string())
    });
    proxy::Switchboard::new(saved, Some(persist), Some(bus))
}
