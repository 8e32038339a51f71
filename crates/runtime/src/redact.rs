//! Replacing a service's secret values in the output bulwark echoes.
//!
//! Replica output is redacted once, line by line, where it enters bulwark (`Logs::pump`):
//! everything downstream — `bulwark logs`, the echo on `up`'s stdout, the stderr tail in
//! crash-loop events and so the journal — only ever sees the redacted line. A line is
//! assembled from as many reads as it takes before it is matched, so a value the replica
//! wrote in two pieces is still caught.

use std::sync::Arc;

use spec::{MIN_REDACTED, REDACTED};

/// The byte strings to hide from one service's output.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is hidden whole.
    patterns: Vec<Vec<u8>>,
}

impl Redactor {
    /// The secrets of `svc` of at least [`MIN_REDACTED`] bytes. Output is matched line by
    /// line, so a value that spans lines (a PEM key) is matched by each of its lines.
    pub fn of(svc: &spec::Service) -> Arc<Redactor> {
        let mut patterns: Vec<Vec<u8>> = svc
            .secrets
            .values()
            .flat_map(|s| s.expose().split(['\n', '\r']).map(str::trim))
            .filter(|p| p.len() >= MIN_REDACTED)
            .map(|p| p.as_bytes().to_vec())
            .collect();
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        Arc::new(Redactor { patterns })
    }

    /// Whether there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `line` with every secret replaced by `***`. `cut`: the line was truncated, so its
    /// end may be the beginning of a secret whose rest was dropped; that is hidden too.
    pub fn line(&self, line: &[u8], cut: bool) -> Vec<u8> {
        if self.patterns.is_empty() {
            return line.to_vec();
        }
        let mut out = Vec::with_capacity(line.len());
        let mut i = 0;
        'scan: while i < line.len() {
            for p in &self.patterns {
                if line[i..].starts_with(p) {
                    out.extend_from_slice(REDACTED.as_bytes());
                    i += p.len();
                    continue 'scan;
                }
            }
            if cut && self.patterns.iter().any(|p| p.starts_with(&line[i..])) {
                out.extend_from_slice(REDACTED.as_bytes());
                break;
            }
            out.push(line[i]);
            i += 1;
        }
        out
    }

    /// [`Redactor::line`] for text (exec probe and hook output, one or more lines).
    pub fn text(&self, text: &str) -> String {
        self.text_cut(text, false)
    }

    /// [`Redactor::text`] for captured output that was cut at its bound: its last line
    /// is matched as a cut line.
    pub fn text_cut(&self, text: &str, cut: bool) -> String {
        if self.patterns.is_empty() {
            return text.to_owned();
        }
        let lines: Vec<&str> = text.split('\n').collect();
        let last = lines.len() - 1;
        let shown: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                String::from_utf8_lossy(&self.line(l.as_bytes(), cut && i == last)).into_owned()
            })
            .collect();
        shown.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[(&str, &str)]) -> Arc<Redactor> {
        let toml = "[services.s]\nrun = [\"x\"]\n";
        let mut svc = spec::parse(toml, std::path::Path::new("t.toml"))
            .expect("valid")
            .services
            .remove(0);
        for (k, v) in secrets {
            svc.secrets.insert((*k).into(), spec::Secret::new(*v));
        }
        Redactor::of(&svc)
    }

    #[test]
    fn hides_every_occurrence_and_the_longest_match() {
        let r = redactor(&[("A", "hunter22"), ("B", "hunter22-extended"), ("C", "abc")]);
        let got = r.line(b"x=hunter22 y=hunter22-extended abc", false);
        assert_eq!(String::from_utf8(got).unwrap(), "x=*** y=*** abc");
    }

    #[test]
    fn a_multi_line_secret_is_hidden_line_by_line() {
        let r = redactor(&[("KEY", "-----BEGIN-----\nAAAABBBBCCCC\n-----END-----\n")]);
        assert_eq!(r.text("got AAAABBBBCCCC!\n-----END-----"), "got ***!\n***");
    }

    #[test]
    fn a_cut_line_hides_a_secret_it_ends_in() {
        let r = redactor(&[("A", "s3cr3t-value")]);
        assert_eq!(r.line(b"token s3cr3t-v", true), b"token ***");
        assert_eq!(r.line(b"token s3cr3t-v", false), b"token s3cr3t-v");
        assert_eq!(r.text_cut("s3cr3t-value\nthen s3cr", true), "***\nthen ***");
    }
}
