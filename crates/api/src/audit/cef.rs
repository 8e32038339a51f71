//! The audit log as ArcSight Common Event Format lines (`bulwark audit --cef`), which
//! most SIEMs (Splunk, QRadar, Sentinel, Elastic) and syslog relays ingest as they are:
//! `CEF:0|bulwark|bulwark|VERSION|SIGNATURE|NAME|SEVERITY|key=value ...`.

use super::Record;

impl Record {
    /// This record as one CEF line (no newline), `version` being bulwark's.
    pub fn cef(&self, version: &str) -> String {
        let (signature, name) = match &self.action {
            Some(action) => (
                action.as_str(),
                format!("{action} {}", self.target.as_deref().unwrap_or("-")),
            ),
            None => ("api", format!("{} {}", self.method, self.path)),
        };
        let severity = match self.outcome.as_str() {
            "refused" | "denied" => 7,
            "failed" | "crash-looping" | "aborted" => 5,
            _ => 3,
        };
        let mut ext = vec![("externalId", self.id.to_string())];
        if let Ok(at) = humantime::parse_rfc3339(&self.at)
            && let Ok(ms) = at.duration_since(std::time::UNIX_EPOCH)
        {
            ext.push(("rt", ms.as_millis().to_string()));
        }
        ext.push(("suser", self.who.clone()));
        if let Some(role) = self.role {
            ext.push(("spriv", format!("{role:?}").to_lowercase()));
        }
        if self.action.is_none() {
            ext.push(("requestMethod", self.method.clone()));
            ext.push(("request", self.path.clone()));
            ext.push(("cn1Label", "status".to_owned()));
            ext.push(("cn1", self.status.to_string()));
        }
        ext.push(("act", self.action.clone().unwrap_or_else(|| "api".into())));
        ext.push(("outcome", self.outcome.clone()));
        for (label, key, value) in [
            ("cs1Label", "cs1", &self.target),
            ("cs2Label", "cs2", &self.by),
        ] {
            if let Some(v) = value {
                ext.push((label, if key == "cs1" { "target" } else { "by" }.to_owned()));
                ext.push((key, v.clone()));
            }
        }
        if let Some(d) = &self.detail {
            ext.push(("msg", d.clone()));
        }
        let ext: Vec<String> = ext
            .into_iter()
            .map(|(k, v)| format!("{k}={}", value(&v)))
            .collect();
        format!(
            "CEF:0|bulwark|bulwark|{}|{}|{}|{severity}|{}",
            header(version),
            header(signature),
            header(&name),
            ext.join(" ")
        )
    }
}

/// A header field: `\` and `|` escaped, line breaks as spaces.
fn header(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// An extension value: `\` and `=` escaped, line breaks as `\n` and `\r`.
fn value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Role;

    #[test]
    fn calls_and_actions_are_single_escaped_lines() {
        let mut call = Record::new(Some(("ci", Role::Operator)), "POST", "/v1/x?a=b|c", 403);
        call.id = 7;
        call.at = "2023-11-14T22:13:20.000Z".into();
        assert_eq!(
            call.cef("0.1.0"),
            "CEF:0|bulwark|bulwark|0.1.0|api|POST /v1/x?a=b\\|c|7|externalId=7 \
             rt=1700000000000 suser=ci spriv=operator requestMethod=POST \
             request=/v1/x?a\\=b|c cn1Label=status cn1=403 act=api outcome=refused"
        );
        let mut action = call.clone();
        action.action = Some("restart".into());
        action.target = Some("web/1".into());
        action.by = Some("rule r".into());
        action.role = None;
        action.outcome = "scheduled".into();
        action.detail = Some("exit 1\nagain".into());
        let line = action.cef("0.1.0");
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.ends_with(
                "act=restart outcome=scheduled cs1Label=target cs1=web/1 cs2Label=by \
                 cs2=rule r msg=exit 1\\nagain"
            ),
            "{line}"
        );
        assert!(line.starts_with("CEF:0|bulwark|bulwark|0.1.0|restart|restart web/1|3|"));
    }
}
