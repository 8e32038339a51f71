//! `[services.NAME.warm]`: what warm restarts need of the rest of the service.

use crate::keys::ServiceTable;
use crate::keys::warm::Warm;
use crate::problem::Problems;

/// The checked `[warm]` of service `name` (`raw`): the process driver only, without a
/// notify socket (a restored process would still name its first incarnation's socket).
pub(super) fn warm(name: &str, raw: &ServiceTable, p: &mut Problems) -> Option<Warm> {
    let spanned = raw.warm.given()?;
    let t = spanned.get_ref();
    let mut refuse = |what: &str, why: &str| {
        p.push(
            spanned.span(),
            format!(
                "{}: warm restarts are not supported for a service with {what} ({why}); \
                 remove [services.{name}.warm] or {what}",
                t.label
            ),
        );
    };
    if raw.container.is_present() {
        refuse(
            &format!("[services.{name}.container]"),
            "they restore plain processes only, not runc's containers",
        );
    }
    if raw.notify.is_present() {
        refuse(
            &format!("[services.{name}.notify]"),
            "a restored process would still send to its first incarnation's notify socket",
        );
    }
    t.build()
}
