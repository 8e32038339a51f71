//! `[services.NAME.notify]`: sd_notify, and the bounds of its watchdog.

use std::time::Duration;

use crate::keys::notify::NotifyTable;
use crate::model::Notify;
use crate::problem::Problems;
use crate::schema::Field;

/// The shortest watchdog: a replica pings at half of it, so below this it spends itself on
/// pings and a scheduling hiccup of a few milliseconds (on either side) restarts it.
const MIN_WATCHDOG: Duration = Duration::from_millis(50);

pub(super) fn notify(field: &Field<NotifyTable>, p: &mut Problems) -> Option<Notify> {
    let t = field.given()?.get_ref();
    if let (Some(w), Some(v)) = (t.watchdog.get(), t.watchdog.given())
        && !w.is_zero()
        && w < MIN_WATCHDOG
    {
        p.push(
            v.span(),
            format!(
                "{}: watchdog = \"{}\" is shorter than 50ms, which no replica can keep up \
                 with reliably (it pings at half of it); use \"50ms\" or more, or \"0s\" for \
                 no watchdog",
                t.label,
                humantime::format_duration(w)
            ),
        );
    }
    t.build()
}
